"""Training logs its params, per-epoch metrics, tags and checkpoint to a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import pytest

from resume_ner.config import config_from_dict
from resume_ner.workflows.training import run_training_workflow


@pytest.mark.network
@pytest.mark.timeout(300)
def test_training_workflow_logs_to_a_real_mlflow_server(mlflow_server, tiny_backbone, tmp_path):
    from mlflow.tracking import MlflowClient

    from resume_ner.data.synth import write_synthetic_resumes

    data = write_synthetic_resumes(tmp_path / "data", 30, seed=11)
    config = config_from_dict({
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"learning_rate": 1e-3, "epochs": 2, "num_threads": 1},
        "tracking": {"experiment_name": "server-test"},
    })
    outcome = run_training_workflow(config, data, tmp_path / "run", tracking_uri=mlflow_server, run_name="tiny")
    assert outcome.tracking_lost == []

    client = MlflowClient(mlflow_server)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert run.data.params["training.learning_rate"] == "0.001"
    assert run.data.params["data.fingerprint"] == outcome.train.data_fingerprint
    assert run.data.tags["resume_ner.data_fingerprint"] == outcome.train.data_fingerprint
    assert run.data.tags["resume_ner.config_hash"] == config.config_hash()
    history = client.get_metric_history(outcome.run_id, "val_f1_micro")
    assert [m.step for m in history] == [h["step"] for h in outcome.train.history]
    assert "test_f1_micro" in run.data.metrics and "test.per_type.SKILL.f1" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"model", "config.yaml", "train_result.json", "test_metrics.json"} <= artifacts
    model_files = {a.path for a in client.list_artifacts(outcome.run_id, "model")}
    assert "model/model.safetensors" in model_files and "model/resume_ner.json" in model_files
