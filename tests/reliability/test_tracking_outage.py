"""A tracking outage during ``resume-ner train``, against a real ``mlflow server`` on 127.0.0.1.

The training runs in a wrapper that holds its first optimizer step (in the first epoch) until the test has
stopped the server, so the outage always starts mid-epoch. (a) The wrapper also holds the second epoch's
validation (the first epoch's metrics have failed by then) until the server is restarted on the same port and
store: training goes on, the queued logging goes through and the run ends FINISHED with every epoch's metrics,
the params and the artifacts. (b) The server stays down: training still finishes and saves everything, the
command exits 3 naming the lost logging and the relog command, and that command, run once a server is back,
completes the run (and changes nothing when run again).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.mlflow_test_server import MlflowServer

from resume_ner.training.checkpoint import list_training_states, validate_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.timeout(900)]

EXPERIMENT = "outage"
POLL_LIMIT_S = 600.0  # a guard against hanging, not a timing requirement

# Holds the first optimizer step (called after the first backward) until the file $GATE exists, and the
# second validation pass until $GATE2 exists (when set), after creating GATE.reached to say it got there.
GATED_TRAIN = """
import os, sys, time
from pathlib import Path
import torch
import resume_ner.training.evaluator as evaluator
from resume_ner.cli.main import main

def hold_at(nth, gate, function):
    seen = [0]
    def held(*args, **kwargs):
        seen[0] += 1
        if seen[0] == nth:
            Path(f"{gate}.reached").touch()
            while not Path(gate).exists():
                time.sleep(0.05)
        return function(*args, **kwargs)
    return held

torch.nn.utils.clip_grad_norm_ = hold_at(1, os.environ["GATE"], torch.nn.utils.clip_grad_norm_)
if os.environ.get("GATE2"):
    evaluator.evaluate_windowed = hold_at(2, os.environ["GATE2"], evaluator.evaluate_windowed)
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def server(tmp_path: Path):
    server = MlflowServer(tmp_path / "mlflow")
    server.root.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.stop(signal.SIGKILL)


def _wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen | None = None,
              stderr: Path | None = None) -> None:
    """Poll ``condition``; fail when the training exited first or after ``POLL_LIMIT_S`` (a hang)."""
    deadline = time.monotonic() + POLL_LIMIT_S
    while not condition():
        if process is not None and process.poll() is not None:
            tail = stderr.read_text(errors="replace")[-3000:] if stderr else ""
            pytest.fail(f"training exited with {process.returncode} before {what}:\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {POLL_LIMIT_S:.0f}s")
        time.sleep(0.1)


def _start_training(dataset: Path, out: Path, backbone: Path, uri: str, gates: dict[str, Path], wait_s: int
                    ) -> tuple[subprocess.Popen, Path, Path]:
    command = [sys.executable, "-c", GATED_TRAIN, "train", "--data", str(dataset), "--output-dir", str(out),
               "--tracking-uri", uri, "--run-name", out.name]
    for setting in (f"model.backbone={backbone}", "model.max_length=64", "model.stride=16", "training.epochs=2",
                    "training.batch_size=8", "training.learning_rate=5e-3", "training.num_threads=1",
                    "training.random_seed=5", f"tracking.experiment_name={EXPERIMENT}",
                    f"tracking.outage_wait_s={wait_s}"):
        command += ["--set", setting]
    stdout, stderr = out.parent / f"{out.name}.out", out.parent / f"{out.name}.err"
    with open(stdout, "wb") as out_file, open(stderr, "wb") as err_file:
        process = subprocess.Popen(command, stdout=out_file, stderr=err_file,
                                   env={**os.environ, **{name: str(path) for name, path in gates.items()}})
    return process, stdout, stderr


def _stop_in_first_epoch(server: MlflowServer, process: subprocess.Popen, stderr: Path, gate: Path,
                         sig: int) -> None:
    """Wait for the held first step (the run exists then), stop the server with ``sig``, let training go on."""
    _wait_for(Path(f"{gate}.reached").exists, "the first optimizer step", process, stderr)
    from mlflow import MlflowClient

    runs = MlflowClient(server.uri).search_runs([MlflowClient(server.uri).get_experiment_by_name(EXPERIMENT)
                                                 .experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"
    server.stop(sig)
    gate.touch()


def _assert_run_complete(uri: str, out: Path) -> None:
    """The run of ``out`` is FINISHED with its params, every epoch's metrics at their steps, test metrics and
    artifacts."""
    from mlflow import MlflowClient

    result = json.loads((out / "train_result.json").read_text())
    client = MlflowClient(uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["training.epochs"] == "2" and params["data.fingerprint"] == result["data_fingerprint"]
    assert params["derived.total_steps"] == str(result["derived"]["total_steps"])
    assert run.data.tags["resume_ner.config_hash"] == result["config_hash"]
    steps = [entry["step"] for entry in result["history"]]
    assert len(steps) == 2
    for key in ("epoch", "train_loss_epoch", "val_f1_micro", "val_loss"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == steps, key
    assert {"test_f1_micro", "best_val_f1_micro"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_result.json", "config.yaml", "test_metrics.json", "model"} <= artifacts
    assert "model/resume_ner.json" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}


def test_server_restarted_during_training_gets_all_the_logging(
    dataset, tiny_backbone, tmp_path, server, reliability_counter
):
    out, gate, gate2 = tmp_path / "restarted", tmp_path / "gate", tmp_path / "gate2"
    process, _, stderr = _start_training(dataset, out, tiny_backbone, server.uri, {"GATE": gate, "GATE2": gate2},
                                         wait_s=600)
    try:
        _stop_in_first_epoch(server, process, stderr, gate, signal.SIGTERM)
        _wait_for(Path(f"{gate2}.reached").exists, "the second validation", process, stderr)
        assert list_training_states(out / "checkpoints")  # the first epoch ended, its logging failed
        server.start()
        gate2.touch()
        reliability_counter("outages", 1)
        reliability_counter("restarts", 1)
        process.wait(timeout=POLL_LIMIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    errors = stderr.read_text(errors="replace")
    assert process.returncode == 0, errors[-3000:]
    assert "logging is queued and retried later" in errors  # the outage was seen
    _assert_run_complete(server.uri, out)


def test_server_down_until_the_end_exits_3_and_relog_completes_the_run(
    dataset, tiny_backbone, tmp_path, server, reliability_counter
):
    out, gate = tmp_path / "lost", tmp_path / "gate"
    process, _, stderr = _start_training(dataset, out, tiny_backbone, server.uri, {"GATE": gate}, wait_s=2)
    try:
        _stop_in_first_epoch(server, process, stderr, gate, signal.SIGKILL)
        reliability_counter("outages", 1)
        process.wait(timeout=POLL_LIMIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    errors = stderr.read_text(errors="replace")
    assert process.returncode == 3, errors[-3000:]
    validate_checkpoint(out / "model")  # loads the weights and tokenizer
    assert (out / "train_result.json").exists() and (out / "test_metrics.json").exists()
    lost_line = next(line for line in errors.splitlines() if line.startswith("warning: MLflow logging was lost:"))
    assert "metrics (step" in lost_line and "artifacts (" in lost_line and "run end (FINISHED)" in lost_line
    command = shlex.join(["resume-ner", "tracking", "relog", str(out), "--tracking-uri", server.uri])
    assert command in errors

    server.start()  # the same store and port: the run is there, RUNNING, with its params
    reliability_counter("restarts", 1)
    relog = [sys.executable, "-m", "resume_ner.cli.main", *shlex.split(command)[1:]]
    done = subprocess.run(relog, capture_output=True, text=True, timeout=POLL_LIMIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completed" in done.stdout
    _assert_run_complete(server.uri, out)

    again = subprocess.run(relog, capture_output=True, text=True, timeout=POLL_LIMIT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to relog" in again.stdout
