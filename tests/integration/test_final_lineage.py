"""A real sweep, then the final training from its study, against a real MLflow server: the model is
registered, loadable from the registry, and its lineage walks back to the sweep's runs as the server has them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resume_ner.config import config_from_dict
from resume_ner.workflows.final import run_final_training_workflow


@pytest.mark.network
@pytest.mark.timeout(400)
def test_final_model_of_a_real_sweep_is_registered_with_lineage(mlflow_server, tiny_backbone, tmp_path,
                                                                 monkeypatch):
    import mlflow
    import mlflow.pyfunc
    import pandas as pd
    from mlflow import MlflowClient

    from resume_ner.data.dataset import load_dataset
    from resume_ner.data.splits import fingerprint_documents
    from resume_ner.data.synth import write_synthetic_resumes
    from resume_ner.hpo.sweep import run_local_hpo_sweep
    from resume_ner.inference import Predictor
    from resume_ner.tracking.lineage import extract_lineage_from_best_model
    from resume_ner.training.checkpoint import validate_checkpoint

    data = write_synthetic_resumes(tmp_path / "data", 30, seed=11)
    config = config_from_dict({
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"epochs": 1, "num_threads": 1},
        "tracking": {"tracking_uri": mlflow_server, "experiment_name": "final-server",
                     "registered_model_name": "resume-ner-server"},
        "hpo": {"n_trials": 2, "pruner": "none",
                "search_space": {"training.learning_rate": {"type": "log_uniform", "min": 1e-3, "max": 5e-3},
                                 "training.batch_size": {"type": "choice", "values": [4, 8]}}},
    })
    run_local_hpo_sweep(config, "server-study", data_path=data, output_dir=tmp_path / "hpo")
    outcome = run_final_training_workflow(config, tmp_path / "final", data_path=data, study_name="server-study",
                                          storage=str(tmp_path / "hpo" / "hpo" / "server-study.db"),
                                          run_name="final", quiet=True)
    assert outcome.tracking_lost == [] and outcome.model_version == "1" and outcome.promoted
    best = outcome.best_trial

    lineage = extract_lineage_from_best_model("resume-ner-server@candidate", tracking_uri=mlflow_server)
    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("resume-ner-server", "candidate")
    final = client.get_run(version.run_id)
    trial = client.get_run(final.data.tags["resume_ner.best_trial_run_id"])
    parent = client.get_run(trial.data.tags["mlflow.parentRunId"])
    assert lineage.final_run_id == final.info.run_id == outcome.run_id
    assert lineage.best_trial_run_id == trial.info.run_id == best["mlflow_run_id"]
    assert lineage.sweep_parent_run_id == parent.info.run_id == best["parent_run_id"]
    assert (lineage.study_name, lineage.best_trial_number) == ("server-study", best["number"])
    assert trial.data.tags["resume_ner.trial_number"] == str(best["number"])
    assert lineage.best_trial_params == {key: trial.data.params[f"sampled.{key}"] for key in best["params"]}
    assert final.data.params["training.batch_size"] == trial.data.params["training.batch_size"]
    test_documents = load_dataset(data, config.data).test
    assert lineage.test_data_fingerprint == version.tags["resume_ner.test_data_fingerprint"]
    assert lineage.test_data_fingerprint == fingerprint_documents(test_documents)
    assert lineage.data_fingerprint == final.data.tags["resume_ner.data_fingerprint"] == best["data_fingerprint"]
    assert sorted(lineage.aliases) == ["candidate", "champion"] and lineage.warnings == []

    lineage_file = client.download_artifacts(outcome.run_id, "lineage.json", str(tmp_path))
    assert json.loads(Path(lineage_file).read_text()) == outcome.lineage.to_dict()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # models:/ URIs resolve on the default registry
    served = mlflow.pyfunc.load_model("models:/resume-ner-server@champion")  # through the server's artifact proxy
    texts = [document.text for document in test_documents[:3]]
    expected = Predictor(outcome.train_result.model_dir, device="cpu").predict(texts)
    predicted = served.predict(pd.DataFrame({"text": texts}))["entities"]
    assert list(predicted) == [[entity.to_dict() for entity in entities] for entities in expected]
    model_dir = mlflow.artifacts.download_artifacts(artifact_uri="models:/resume-ner-server@champion",
                                                    dst_path=str(tmp_path / "registry"))
    assert (Path(model_dir) / "MLmodel").is_file()
    validate_checkpoint(Path(model_dir) / "artifacts" / "model")
