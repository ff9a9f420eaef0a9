"""ONNX export of a model directory: the encoder and token-classification head as one ONNX graph with dynamic
batch and sequence axes, beside the CRF scores, tokenizer, ``config.json`` and ``resume_ner.json`` it needs.

The export directory is a model directory in its own right: ``resume-ner predict``/``evaluate --model DIR`` run
it on ONNX Runtime with the project's windows and decoding (``resume_ner.training.onnx_model``), and any ONNX
runtime can serve ``model.onnx`` (inputs ``input_ids``, ``attention_mask`` and, where the backbone takes them,
``token_type_ids``, all int64 ``(batch, sequence)``; output ``logits``, fp32 ``(batch, sequence, labels)``).
Every export is checked before it is kept: ONNX Runtime's logits must match the PyTorch model's within
``tolerance`` on probe windows of several lengths and paddings; ``resume_ner.json`` records the figure.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from resume_ner.errors import CheckpointError, ModelLoadError
from resume_ner.io import is_under, replace_dir_atomic, write_json_atomic
from resume_ner.layout import METADATA_FILE, ONNX_FILE, WEIGHTS_FILE
from resume_ner.training.checkpoint import PICKLE_WEIGHTS_FILE, load_model_checkpoint, package_versions
from resume_ner.training.onnx_model import LOGITS_OUTPUT, ONNX_EXTRA, OnnxTokenClassifier

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch.onnx import ONNXProgram
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # in the order of the graph's inputs
LOGIT_TOLERANCE = 1e-3  # the largest absolute logit difference an export may have from its PyTorch model
_PROBE_SEED = 0
EXPORT_PACKAGES = ("resume-ner", "torch", "transformers", "onnx", "onnxscript", "onnxruntime")
_QUIET_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")  # progress lines and notes about torchvision ops


@dataclass(frozen=True)
class OnnxExport:
    """What an export wrote and how close it came: the graph's opset and inputs, and the largest absolute logit
    difference from the PyTorch model over the probe windows."""

    directory: str
    source: str
    opset: int
    inputs: list[str]
    max_abs_logit_diff: float
    seconds: float
    versions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Logits(torch.nn.Module):
    """A token classifier whose forward takes the graph's inputs positionally and returns its logits only."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:  # only for backbones that take them (_graph_inputs)
            inputs["token_type_ids"] = token_type_ids
        return self.model(**inputs).logits


def _graph_inputs(model: PreTrainedModel, tokenizer: Any) -> list[str]:
    """The graph's inputs, in ``MODEL_INPUTS`` order: input ids and attention mask, and ``token_type_ids`` where the
    tokenizer gives them and the model's ``forward`` takes them (not DistilBERT, RoBERTa or MPNet)."""
    takes = inspect.signature(model.forward).parameters
    return [
        name
        for name in MODEL_INPUTS
        if name != "token_type_ids" or (name in tokenizer.model_input_names and name in takes)
    ]


def _probe_batch(names: list[str], vocabulary: int, lengths: list[int]) -> tuple[torch.Tensor, ...]:
    """Random windows of ``lengths`` tokens, right-padded to the longest: the graph's inputs, in ``names`` order."""
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    width = max(lengths)
    input_ids = torch.randint(0, vocabulary, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
    given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}
    return tuple(given[name] for name in names)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's INFO/WARNING lines kept out of the user's output (errors still pass)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def max_logit_difference(
    model: torch.nn.Module, exported: OnnxTokenClassifier, names: list[str], batches: list[tuple[torch.Tensor, ...]]
) -> float:
    """The largest absolute difference between ``model``'s and ``exported``'s logits over the real (unpadded)
    tokens of ``batches``."""
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            inputs = dict(zip(names, batch, strict=True))
            expected = model(**inputs)
            found = exported(**inputs).logits
            real = inputs["attention_mask"].bool()
            worst = max(worst, float((expected[real] - found[real]).abs().max()))
    return worst


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, tolerance: float = LOGIT_TOLERANCE) -> OnnxExport:
    """Export the model directory ``model_dir`` to ONNX in ``out_dir`` (written to a staging directory, moved into
    place only after the parity check passed, so a failed export leaves no directory). ``CheckpointError`` when
    the model directory is not one, or when ONNX Runtime's logits differ from PyTorch's by more than
    ``tolerance``."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if find_spec(name) is None]
    if missing:
        raise ModelLoadError(f"ONNX export needs {', '.join(missing)}: {ONNX_EXTRA}")
    if is_under(out_dir, model_dir) or is_under(model_dir, out_dir):
        raise CheckpointError(f"ONNX export of {model_dir}: write it outside the model directory, not to {out_dir}")
    started = time.perf_counter()
    model, tokenizer, metadata = load_model_checkpoint(model_dir)
    if isinstance(model, OnnxTokenClassifier):
        raise CheckpointError(f"{model_dir} is already an ONNX export; export the checkpoint it came from")
    names = _graph_inputs(model, tokenizer)
    max_length = int(metadata["windows"]["max_length"])
    wrapped = _Logits(model).eval()
    batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2, max=max_length)
    dynamic = {name: {0: batch, 1: sequence} for name in names}
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(WEIGHTS_FILE, PICKLE_WEIGHTS_FILE, ".*"))
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                wrapped,
                _probe_batch(names, len(tokenizer), [16, 9]),
                str(staging / ONNX_FILE),
                input_names=names,
                output_names=[LOGITS_OUTPUT],
                dynamic_shapes=dynamic,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        exported = OnnxTokenClassifier(staging / ONNX_FILE, torch.device("cpu"))
        probes = [
            _probe_batch(names, len(tokenizer), [max_length, max_length // 2, 3]),
            _probe_batch(names, len(tokenizer), [max(2, max_length // 3)]),
        ]
        difference = max_logit_difference(wrapped, exported, names, probes)
        if not difference <= tolerance:
            raise CheckpointError(
                f"ONNX export of {model_dir}: ONNX Runtime's logits differ from PyTorch's by up to {difference:.2e}, "
                f"more than the tolerance {tolerance:.0e}; nothing was written to {out_dir}"
            )
        result = OnnxExport(
            directory=str(out_dir),
            source=str(model_dir),
            opset=int(cast("ONNXProgram", program).model.opset_imports[""]),  # dynamo=True returns the program
            inputs=names,
            max_abs_logit_diff=difference,
            seconds=round(time.perf_counter() - started, 1),
            versions=package_versions(EXPORT_PACKAGES),
        )
        write_json_atomic(staging / METADATA_FILE, {**metadata, "export": {"format": "onnx", **result.to_dict()}})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir_atomic(staging, out_dir)
    log.info("exported %s to %s (max |logit difference| %.2e)", model_dir, out_dir / ONNX_FILE, difference)
    return result
