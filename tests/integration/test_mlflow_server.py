"""Tracking through a real MLflow server over HTTP, and surviving the server going away."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from resume_ner.config import TrackingConfig
from resume_ner.tracking import setup_mlflow

pytestmark = [pytest.mark.network, pytest.mark.timeout(180)]


def test_run_logged_over_http_reads_back_and_survives_server_loss(
    mlflow_server: str, stop_mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///ignored-because-explicit.db")
    config = TrackingConfig(experiment_name="server-test", outage_wait_s=2)
    report = tmp_path / "report.txt"
    report.write_text("best f1 0.5\n")

    run = setup_mlflow(config, tracking_uri=mlflow_server, run_name="over-http", tags={"purpose": "test"})
    assert run.enabled and run.tracking_uri == mlflow_server
    run.log_params({"training": {"learning_rate": 3e-5, "epochs": 2}, "model": "tiny"})
    for step, loss in enumerate([1.0, 0.5, 0.25]):
        run.log_metrics({"loss": loss, "eval": {"f1_micro": step / 10}}, step=step)
    run.log_artifact(report)
    run.log_dict({"f1": 0.5}, "metrics/final.json")
    assert run.lost == []

    client = MlflowClient(tracking_uri=mlflow_server)
    logged = client.get_run(run.run_id)
    assert logged.info.run_name == "over-http"
    assert logged.info.experiment_id == client.get_experiment_by_name("server-test").experiment_id
    assert logged.data.params == {"training.learning_rate": "3e-05", "training.epochs": "2", "model": "tiny"}
    assert logged.data.tags["purpose"] == "test"
    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert len(client.get_metric_history(run.run_id, "eval.f1_micro")) == 3
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"report.txt", "metrics"}
    downloaded = client.download_artifacts(run.run_id, "metrics/final.json", str(tmp_path / "dl"))
    assert json.loads(Path(downloaded).read_text()) == {"f1": 0.5}

    stop_mlflow_server()
    started = time.monotonic()
    run.log_metrics({"loss": 0.1}, step=3)  # must not raise: queued
    run.end("FINISHED")  # must not raise either: retries the queue for outage_wait_s, then records the loss
    elapsed = time.monotonic() - started
    assert any(entry.startswith("metrics step 3:") for entry in run.lost), run.lost
    assert any(entry.startswith("end FINISHED:") for entry in run.lost), run.lost
    assert elapsed < 25, f"two lost calls took {elapsed:.1f}s"

