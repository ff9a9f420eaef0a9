"""Training on whole documents with the tiny model: checkpoints, exact resume, early stopping, callbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resume_ner.errors import CheckpointError, ConfigError
from resume_ner.training.callbacks import TrainerCallback
from resume_ner.training.checkpoint import list_training_states, validate_checkpoint
from resume_ner.training.trainer import train_model


class _Crash(RuntimeError):
    pass


class CrashAtStep(TrainerCallback):
    """Simulates a crash in the middle of an epoch, after a periodic checkpoint has been written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state, logs):
        if state.global_step == self.step:
            raise _Crash(f"crash at step {self.step}")


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_train_begin(self, state):
        self.events.append(("begin", state.global_step))

    def on_evaluate(self, state, metrics, value):
        assert "f1_micro" in metrics and value == metrics["f1_micro"]
        self.events.append(("evaluate", state.epoch))

    def on_train_end(self, state):
        self.events.append(("end", state.epoch))


def _split(docs):
    return docs[:40], docs[40:50]


def test_train_writes_a_loadable_best_checkpoint_and_result(tiny_config, synth_documents, tmp_path):
    train, val = _split(synth_documents)
    recorder = Recorder()
    result = train_model(tiny_config, train, val, tmp_path / "run", callbacks=[recorder])
    assert recorder.events == [("begin", 0), ("evaluate", 1), ("evaluate", 2), ("end", 2)]
    assert result.epochs_completed == 2 and result.global_step > 0
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.best_metric == max(h["f1_micro"] for h in result.history)
    metadata = validate_checkpoint(result.model_dir)
    assert metadata["label_scheme"]["labels"][0] == "O" and len(metadata["label_scheme"]["labels"]) == 25
    assert metadata["windows"] == {"max_length": 64, "stride": 16, "line_markers": True, "label_all_tokens": False}
    assert metadata["data_fingerprint"] == result.data_fingerprint
    assert "torch" in metadata["versions"] and metadata["config"]["training"]["learning_rate"] == 1e-3
    assert (tmp_path / "run" / "config.yaml").is_file()
    saved = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert saved["best_metric"] == result.best_metric
    assert 1 <= len(list_training_states(tmp_path / "run" / "checkpoints")) <= 2


def test_line_markers_are_saved_with_the_model_and_mark_what_it_predicts(tiny_config, synth_documents, tmp_path):
    from resume_ner.data.windows import LINE_MARKER
    from resume_ner.inference import Predictor

    tiny_config["model"]["line_markers"] = True
    train, val = _split(synth_documents)
    result = train_model(tiny_config, train[:16], val[:4], tmp_path / "run")
    assert validate_checkpoint(result.model_dir)["windows"]["line_markers"] is True

    predictor = Predictor(result.model_dir, device="cpu", precision="fp32")
    marker_id = predictor.tokenizer.convert_tokens_to_ids(LINE_MARKER)
    windowed = predictor.members[0].windows(val[:4])
    assert all(marker_id in window.input_ids for window in windowed.windows if window.is_first)
    # a model saved without the setting (before line markers existed) reads its text unmarked
    unmarked = Path(shutil.copytree(result.model_dir, tmp_path / "unmarked"))
    metadata = json.loads((unmarked / "resume_ner.json").read_text())
    del metadata["windows"]["line_markers"]
    (unmarked / "resume_ner.json").write_text(json.dumps(metadata))
    old = Predictor(unmarked, device="cpu", precision="fp32").members[0].windows(val[:4])
    assert not any(marker_id in window.input_ids for window in old.windows)
    for doc, entities in zip(val[:4], predictor.predict([doc.text for doc in val[:4]]), strict=True):
        assert all(e.text == doc.text[e.start : e.end] and LINE_MARKER not in e.text for e in entities)


def test_checkpoint_loads_in_transformers_pipeline(tiny_config, synth_documents, tmp_path):
    from transformers import pipeline

    train, val = _split(synth_documents)
    result = train_model(tiny_config, train[:16], val[:4], tmp_path / "run")
    ner = pipeline("token-classification", model=result.model_dir, aggregation_strategy="simple")
    output = ner(val[0].text[:300])
    assert isinstance(output, list)
    config = json.loads((Path(result.model_dir) / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and "B-NAME" in config["label2id"]


def test_training_is_reproducible_and_resume_after_a_crash_gives_identical_metrics(
    tiny_config, synth_documents, tmp_path
):
    train, val = _split(synth_documents)
    tiny_config["training"]["save_every_steps"] = 2
    reference = train_model(tiny_config, train, val, tmp_path / "reference")

    with pytest.raises(_Crash):
        train_model(tiny_config, train, val, tmp_path / "crashed", callbacks=[CrashAtStep(7)])
    states = list_training_states(tmp_path / "crashed" / "checkpoints")
    assert states and states[-1].name == "checkpoint-00000006"  # mid-epoch: epoch 1 has 5 steps
    resumed = train_model(tiny_config, train, val, tmp_path / "crashed", resume=True)

    assert resumed.global_step == reference.global_step
    assert resumed.history == reference.history
    assert resumed.metrics == reference.metrics
    assert resumed.best_metric == reference.best_metric


def test_resume_with_a_different_config_is_refused(tiny_config, synth_documents, tmp_path):
    train, val = _split(synth_documents)
    tiny_config["training"]["epochs"] = 1
    train_model(tiny_config, train[:16], val[:4], tmp_path / "run")
    tiny_config["training"]["learning_rate"] = 5e-4
    with pytest.raises(CheckpointError, match="different configuration"):
        train_model(tiny_config, train[:16], val[:4], tmp_path / "run", resume=True)


def test_resume_without_the_best_model_is_refused_before_training(tiny_config, synth_documents, tmp_path):
    import shutil

    class CrashInSecondEpoch(TrainerCallback):
        def on_step_end(self, state, logs):
            if state.epoch >= 1:
                raise _Crash("crash in epoch 2")

    train, val = _split(synth_documents)
    with pytest.raises(_Crash):
        train_model(tiny_config, train[:16], val[:4], tmp_path / "run", callbacks=[CrashInSecondEpoch()])
    shutil.rmtree(tmp_path / "run" / "model")  # the best model of epoch 1, which epoch 2 might not replace
    with pytest.raises(CheckpointError, match=r"best model so far \(epoch 1\).*resume_ner.json is missing"):
        train_model(tiny_config, train[:16], val[:4], tmp_path / "run", resume=True, callbacks=[CrashInSecondEpoch()])
    assert list_training_states(tmp_path / "run" / "checkpoints")  # nothing of the run was removed


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resuming_a_finished_training_returns_its_result_and_changes_nothing(tiny_config, synth_documents, tmp_path):
    train, val = _split(synth_documents)
    tiny_config["training"]["epochs"] = 1
    finished = train_model(tiny_config, train[:16], val[:4], tmp_path / "run")
    files = _files(tmp_path / "run")
    again = train_model(tiny_config, train[:16], val[:4], tmp_path / "run", resume=True)
    assert again.to_dict() == json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert again.train_seconds == finished.train_seconds and again.global_step == finished.global_step
    assert _files(tmp_path / "run") == files


def test_an_overwrite_stopped_early_is_resumed_not_taken_for_the_training_it_replaces(
    tiny_config, synth_documents, tmp_path
):
    train, val = _split(synth_documents)
    tiny_config["training"].update(epochs=1, save_every_steps=1)
    train_model(tiny_config, train[:16], val[:4], tmp_path / "run")
    with pytest.raises(_Crash):
        train_model(tiny_config, train[:16], val[:4], tmp_path / "run", overwrite=True, callbacks=[CrashAtStep(2)])
    assert not (tmp_path / "run" / "train_result.json").exists()  # the replaced training's result is gone
    resumed = train_model(tiny_config, train[:16], val[:4], tmp_path / "run", resume=True)
    assert resumed.history and json.loads((tmp_path / "run" / "train_result.json").read_text()) == resumed.to_dict()


def test_an_output_dir_that_cannot_be_written_is_refused_before_training(tiny_config, synth_documents, tmp_path):
    import os
    import stat

    out = tmp_path / "run"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("a read-only directory stays writable for this user (root)")
        with pytest.raises(CheckpointError, match=r"cannot write in the output directory .*run"):
            train_model(tiny_config, synth_documents[:4], synth_documents[4:6], out)
    finally:
        out.chmod(stat.S_IRWXU)


def test_early_stopping_stops_when_the_metric_does_not_improve(tiny_config, synth_documents, tmp_path):
    train, val = _split(synth_documents)
    tiny_config["training"].update(epochs=5, early_stopping_patience=1, metric="f1_micro", learning_rate=1e-12)
    tiny_config["model"]["dropout"] = 0.0
    result = train_model(tiny_config, train[:16], val[:4], tmp_path / "run")
    assert result.epochs_completed < 5
    assert "early stopping" in result.stop_reason


def test_num_labels_must_match_the_label_scheme(tiny_config, synth_documents, tmp_path):
    tiny_config["model"]["num_labels"] = 3
    with pytest.raises(ConfigError, match="num_labels=3"):
        train_model(tiny_config, synth_documents[:4], synth_documents[4:6], tmp_path / "run")


def test_truncated_or_missing_checkpoint_files_are_named(tiny_config, synth_documents, tmp_path):
    tiny_config["training"]["epochs"] = 1
    result = train_model(tiny_config, synth_documents[:8], synth_documents[8:10], tmp_path / "run")
    model_dir = Path(result.model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        validate_checkpoint(model_dir)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        validate_checkpoint(model_dir)


def test_a_crash_between_the_renames_of_a_model_replace_is_recovered(tmp_path):
    from resume_ner.io import recover_dir, replace_dir_atomic

    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("v1")
    old = tmp_path / ".model.old"
    target.rename(old)  # the state after the first rename of a replace, had the process died there
    recover_dir(target)
    assert (target / "weights").read_text() == "v1" and not old.exists()
    staging = tmp_path / ".model.tmp"
    staging.mkdir()
    (staging / "weights").write_text("v2")
    replace_dir_atomic(staging, target)
    assert (target / "weights").read_text() == "v2" and not old.exists() and not staging.exists()


def test_bf16_autocast_trains_fp32_weights_that_differ_from_an_fp32_run(tiny_config, synth_documents, tmp_path):
    import torch
    from safetensors.torch import load_file

    train, val = _split(synth_documents)
    fp32 = train_model({**tiny_config, "training": {**tiny_config["training"], "precision": "fp32"}}, train, val,
                       tmp_path / "fp32")
    bf16 = train_model({**tiny_config, "training": {**tiny_config["training"], "precision": "bf16"}}, train, val,
                       tmp_path / "bf16")
    assert (fp32.derived["precision"], bf16.derived["precision"]) == ("fp32", "bf16")
    assert bf16.epochs_completed == 2 and all(h["train_loss"] == h["train_loss"] for h in bf16.history)  # not NaN
    weights = load_file(Path(bf16.model_dir) / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}  # autocast leaves the weights in fp32
    reference = load_file(Path(fp32.model_dir) / "model.safetensors")
    assert any(not torch.equal(weights[k], reference[k]) for k in weights)  # the forward passes really ran in bf16
