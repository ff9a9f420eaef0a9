"""Backbone resolution, creation of the token-classification model and its fast tokenizer, and the attention
kernel of training steps."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

from resume_ner.config import PACKAGED_BACKBONE, ModelConfig
from resume_ner.data.labels import LabelScheme
from resume_ner.errors import ModelLoadError
from resume_ner.training.backbones import PACKAGED_PREFIX, packaged_backbone_path
from resume_ner.training.checkpoint import pickle_only_refusal, use_safetensors

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

_MIN_VOCABULARY = 100
_DROPOUT_ATTRIBUTES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "dropout",
    "attention_dropout",
    "hidden_dropout",
)


def resolve_backbone(backbone: str) -> str:
    """A loadable path or hub id for ``backbone``: a packaged backbone (``packaged:<name>``), a local directory,
    or a hub id."""
    if backbone.startswith(PACKAGED_PREFIX):
        return str(packaged_backbone_path(backbone))
    path = Path(backbone).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"backbone directory {path} has no config.json: not a Hugging Face model directory")
        return str(path.resolve())
    return backbone


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"} or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in {"1", "true", "yes"}


def _load_error(backbone: str, what: str, exc: Exception) -> ModelLoadError:
    hint = (
        "Offline mode is on (HF_HUB_OFFLINE) and the model is not in the local cache: "
        "set model.backbone to a local directory (e.g. one written by save_pretrained) "
        f"or to {PACKAGED_BACKBONE!r}."
        if _offline()
        else "Check the id or path, or set model.backbone to a local directory."
    )
    return ModelLoadError(f"cannot load the {what} of backbone {backbone!r}: {exc}. {hint}")


def load_fast_tokenizer(source: str) -> PreTrainedTokenizerFast:
    """The fast tokenizer of ``source``; a slow (Python) tokenizer is refused."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise _load_error(source, "tokenizer", exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"backbone {source!r} has no fast tokenizer (tokenizer.json); character offsets need one. "
            "Convert it with tokenizers or pick a backbone that ships tokenizer.json."
        )
    if len(tokenizer) < _MIN_VOCABULARY:
        # transformers builds an empty tokenizer when the vocabulary files are missing
        raise ModelLoadError(
            f"the tokenizer of backbone {source!r} has only {len(tokenizer)} tokens: its vocabulary files "
            "(tokenizer.json, vocab.txt, ...) are missing"
        )
    return cast("PreTrainedTokenizerFast", tokenizer)  # is_fast, checked above


def create_model_and_tokenizer(
    model_config: ModelConfig, scheme: LabelScheme
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A token-classification model with ``scheme``'s labels on top of the configured backbone, and its
    fast tokenizer. Weights load from safetensors only (pickle ones with ``$RESUME_NER_ALLOW_PICKLE=1``); remote
    code is never trusted."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    source = resolve_backbone(model_config.backbone)
    refusal = pickle_only_refusal(Path(source))
    if refusal:
        raise ModelLoadError(f"backbone {model_config.backbone!r}: {refusal}")
    tokenizer = load_fast_tokenizer(source)
    try:
        hf_config = AutoConfig.from_pretrained(
            source,
            num_labels=len(scheme.labels),
            id2label=scheme.id2label,
            label2id=scheme.label2id,
            trust_remote_code=False,
        )
    except (OSError, ValueError) as exc:
        raise _load_error(model_config.backbone, "config", exc) from exc
    if model_config.num_layers is not None:
        _cut_layers(hf_config, model_config.num_layers, model_config.backbone)
    for attribute in _DROPOUT_ATTRIBUTES:
        if hasattr(hf_config, attribute):
            setattr(hf_config, attribute, model_config.dropout)
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            source, config=hf_config, trust_remote_code=False, use_safetensors=use_safetensors(), weights_only=True
        )
    except (OSError, ValueError) as exc:
        raise _load_error(model_config.backbone, "weights", exc) from exc
    log.info(
        "backbone %s: %d labels, %.1fM parameters",
        model_config.backbone,
        len(scheme.labels),
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model, tokenizer


def _cut_layers(hf_config: PretrainedConfig, num_layers: int, backbone: str) -> None:
    """Keep the first ``num_layers`` transformer layers: the weights of the others are not loaded."""
    depth = getattr(hf_config, "num_hidden_layers", None)
    if depth is None:
        raise ModelLoadError(f"model.num_layers is set, but backbone {backbone!r} has no num_hidden_layers to cut")
    if num_layers > depth:
        raise ModelLoadError(f"model.num_layers is {num_layers}, but backbone {backbone!r} has only {depth} layers")
    hf_config.num_hidden_layers = num_layers


def training_attention(model: PreTrainedModel, device: torch.device, fast_dropout: bool = False) -> str:
    """The attention implementation for training steps of ``model`` on ``device``.

    On a CPU, when the model would run ``sdpa`` with attention dropout: PyTorch's CPU SDPA kernels do not take
    dropout and fall back to a slow path, so the step runs eager attention instead (a training step of the
    packaged MiniLM, batch 16 x 256, is 1.5x faster in eager attention in bf16; docs/benchmarks.md). With
    ``fast_dropout`` (``training.fast_dropout``; ``enable_fast_dropout`` called on the model) and a model that takes
    Transformers' attention interface, that is ``FAST_DROPOUT_ATTENTION``: eager attention with the cheaper masks of
    ``resume_ner.training.fast_dropout``. Otherwise the model's own. All compute the same function; validation and
    prediction (no dropout) keep the model's own, where ``sdpa`` is faster.
    """
    from resume_ner.training.fast_dropout import FAST_DROPOUT_ATTENTION

    config = model.config
    current = config._attn_implementation
    dropout = max(
        float(getattr(config, name, 0.0) or 0.0) for name in ("attention_probs_dropout_prob", "attention_dropout")
    )
    if device.type != "cpu" or current != "sdpa" or dropout <= 0:
        return current
    return FAST_DROPOUT_ATTENTION if fast_dropout and model._supports_attention_backend else "eager"
