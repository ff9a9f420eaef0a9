"""The command line as a user runs it: synth -> validate -> train -> evaluate -> predict, and a training
killed with SIGKILL mid-epoch that ``--resume`` finishes with the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "resume_ner.cli.main"]


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def _train_args(backbone: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--output-dir", str(out), "--quiet",
            "--set", f"model.backbone={backbone}", "--set", "model.max_length=64", "--set", "model.stride=16",
            "--set", "training.learning_rate=1e-3", "--set", "training.epochs=2", "--set", "training.num_threads=1",
            "--set", "training.random_seed=5", *extra]


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    result = subprocess.run(CLI + ["data", "synth", "--n", "40", "--seed", "3", "--out", str(out)],
                            capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 0, result.stderr
    return out / "resumes.jsonl"


def test_train_evaluate_predict_from_the_command_line(tiny_backbone, synth_file, tmp_path):
    validate = _run(["data", "validate", str(synth_file), "--json"], tmp_path)
    assert validate.returncode == 0, validate.stderr
    assert json.loads(validate.stdout)["documents"] == 40

    train = _run(_train_args(tiny_backbone, synth_file, tmp_path / "run"), tmp_path)
    assert train.returncode == 0, train.stderr
    assert "test metrics" in train.stdout and "micro" in train.stdout
    run = tmp_path / "run"
    assert {"config.yaml", "train_result.json", "test_metrics.json"} <= {p.name for p in run.iterdir()}
    # tracking went to the local default store of the working directory
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()

    evaluate = _run(["evaluate", "--model", str(run / "model"), "--data", str(synth_file), "--json"], tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr
    metrics = json.loads(evaluate.stdout)
    assert metrics["documents"] == 40 and "span_f1_micro" in metrics and "per_type" in metrics
    assert metrics["decoding"] == "viterbi"  # the model's own
    argmax = _run(["evaluate", "--model", str(run / "model"), "--data", str(synth_file), "--json",
                   "--decoding", "argmax"], tmp_path)
    assert argmax.returncode == 0, argmax.stderr
    assert json.loads(argmax.stdout)["decoding"] == "argmax"
    assert json.loads(argmax.stdout)["loss"] == pytest.approx(metrics["loss"])  # the same forward passes
    # evaluate runs its forward passes as predict and train's test evaluation do by default; --precision forces one
    assert metrics["precision"] == json.loads((run / "test_metrics.json").read_text())["precision"]
    fp32 = _run(["evaluate", "--model", str(run / "model"), "--data", str(synth_file), "--json",
                 "--precision", "fp32"], tmp_path)
    assert fp32.returncode == 0, fp32.stderr
    assert json.loads(fp32.stdout)["precision"] == "fp32"

    text_file = tmp_path / "resume.txt"
    text_file.write_text("Jane Doe\njane@example.com\nSenior Data Engineer at Contoso Ltd, Berlin\n")
    predict = _run(["predict", "--model", str(run / "model"), str(text_file), str(synth_file)], tmp_path)
    assert predict.returncode == 0, predict.stderr
    lines = [json.loads(line) for line in predict.stdout.splitlines()]
    assert len(lines) == 41 and lines[0]["source"] == str(text_file)
    source_text = text_file.read_text()
    for entity in lines[0]["entities"]:
        assert source_text[entity["start"] : entity["end"]] == entity["text"]


def test_bad_input_exits_1_and_names_each_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "text": "Jane Doe", "labels": [[0, 8, "Name"]]}\n'
        '{"id": "b", "text": "broken"\n'
        '{"id": "c", "text": "short", "labels": [[0, 50, "Name"]]}\n'
        '{"id": "d", "text": "Jane Doe at Contoso", "labels": [[0, 8, "Name"], [5, 19, "Companies worked at"]]}\n'
    )
    result = _run(["data", "validate", str(bad)], tmp_path)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert f"{bad}:2" in out and f"{bad}:3" in out and f"{bad}:4" in out
    assert "overlap" in out.lower()
    train = _run(["train", "--data", str(bad), "--output-dir", "x", "--no-tracking"], tmp_path)
    assert train.returncode == 1 and "Traceback" not in train.stderr and f"{bad}:2" in train.stderr


def test_sigkill_mid_epoch_then_resume_ends_with_the_same_metrics(tiny_backbone, synth_file, tmp_path):
    extra = ("--set", "training.save_every_steps=1", "--set", "training.keep_checkpoints=3", "--no-tracking")
    reference = _run(_train_args(tiny_backbone, synth_file, tmp_path / "reference", *extra), tmp_path)
    assert reference.returncode == 0, reference.stderr

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(CLI + _train_args(tiny_backbone, synth_file, killed_dir, *extra), cwd=tmp_path,
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed_dir / "checkpoints"
    deadline = time.monotonic() + 300
    try:
        # kill once a few mid-epoch checkpoints exist (epoch 1 has more steps than this)
        while time.monotonic() < deadline and process.poll() is None:
            done = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()] \
                if checkpoints.exists() else []
            if any(int(p.name.split("-")[1]) >= 3 for p in done):
                break
            time.sleep(0.05)
        assert process.poll() is None, "training finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    state = json.loads(max(checkpoints.glob("checkpoint-*/trainer_state.json")).read_text())["state"]
    assert state["epoch"] == 0 and state["step_in_epoch"] > 0  # the kill really was mid-epoch

    resumed = _run(_train_args(tiny_backbone, synth_file, killed_dir, "--resume", *extra), tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    def final(run: Path) -> tuple[dict, dict]:
        result = json.loads((run / "train_result.json").read_text())
        return {k: result[k] for k in ("best_metric", "best_epoch", "global_step", "history", "metrics")}, \
            json.loads((run / "test_metrics.json").read_text())

    ref_result, ref_test = final(tmp_path / "reference")
    res_result, res_test = final(killed_dir)
    assert res_result == ref_result
    ref_test.pop("model_dir"), res_test.pop("model_dir")
    assert res_test == ref_test
