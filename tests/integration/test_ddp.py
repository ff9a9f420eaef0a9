"""Data-parallel training for real: torchrun with 2 gloo processes on CPU, tiny model.

The 2-process job (batch 4 per process) sees the same windows per optimizer step as a 1-process run with
batch 8, so its validation metrics match within a small tolerance (per-process loss means and the one
padded window differ slightly); only rank 0 logs to MLflow and writes checkpoints; a 2-process job resumed
from a checkpoint (plain torchrun of the container entrypoint) ends where the uninterrupted one did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from resume_ner.data.synth import write_synthetic_resumes


def _train(tmp_path, name: str, extra: list[str], backbone, data, uri: str, torchrun: int = 0) -> tuple[dict, float]:
    """Train with ``resume-ner train`` (``--nproc-per-node`` in ``extra``), or with a plain ``torchrun`` of the
    container entrypoint ``resume_ner.cli.train`` in ``torchrun`` processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}",
                    "-m", "resume_ner.cli.train", "--data-asset"]
    else:
        launcher = [sys.executable, "-m", "resume_ner.cli.main", "train", "--data"]
    command = [*launcher, str(data), "--output-dir", str(tmp_path / name), "--tracking-uri", uri, "--run-name", name,
               "--quiet", *extra]
    for setting in (f"model.backbone={backbone}", "model.dropout=0", "model.max_length=64", "model.stride=16",
                    "training.epochs=3", "training.learning_rate=5e-3", "training.num_threads=1",
                    "training.warmup_ratio=0"):
        command += ["--set", setting]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((tmp_path / name / "train_result.json").read_text()), elapsed


@pytest.mark.timeout(900)
def test_two_torchrun_processes_match_one_process_with_the_same_effective_batch(tiny_backbone, tmp_path):
    from mlflow import MlflowClient

    data = write_synthetic_resumes(tmp_path / "data", 30, 11)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    one, one_seconds = _train(tmp_path, "one", ["--set", "training.batch_size=8"], tiny_backbone, data, uri)
    two, two_seconds = _train(tmp_path, "two", ["--set", "training.batch_size=4", "--nproc-per-node", "2"],
                              tiny_backbone, data, uri)
    print(f"tiny training, 3 epochs: 1 process {one_seconds:.1f}s, 2 processes {two_seconds:.1f}s")

    assert one["global_step"] == two["global_step"]
    assert one["history"][-1]["f1_micro"] > 0.1  # it learned something, so the comparison means something
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05)
        assert b["f1_micro"] == pytest.approx(a["f1_micro"], abs=0.05)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("resume-ner").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["one", "two"]  # one run for the 2-process job
    [run] = [run for run in runs if run.info.run_name == "two"]
    assert run.data.params["derived.world_size"] == "2"
    assert run.data.params["derived.effective_batch_size"] == "8"
    assert run.info.status == "FINISHED" and "test_f1_micro" in run.data.metrics
    states = sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir())
    assert len(states) == 2 and all(name.startswith("checkpoint-") for name in states)  # keep_checkpoints=2
    assert (tmp_path / "two" / "model" / "model.safetensors").exists()

    # resume under DDP, with a plain torchrun of the container entrypoint: a job restarted from the epoch-2
    # state ends where the uninterrupted one did (its output directory holds the state and a best model, which
    # stays when the last epoch does not improve on it)
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "two" / "checkpoints" / states[0], resumed_dir / states[0])
    shutil.copytree(tmp_path / "two" / "model", tmp_path / "resumed" / "model")
    resumed, _ = _train(tmp_path, "resumed", ["--set", "training.batch_size=4", "--resume"], tiny_backbone, data,
                        uri, torchrun=2)
    assert resumed["global_step"] == two["global_step"]
    assert resumed["history"][-1]["loss"] == pytest.approx(two["history"][-1]["loss"], rel=1e-4)
    assert resumed["history"][-1]["f1_micro"] == pytest.approx(two["history"][-1]["f1_micro"], abs=1e-4)
