"""``resume-ner register OUTPUT_DIR``, the AzureML pipeline's register_lineage step, on a real sqlite MLflow store:
a sweep's run, a trial run under it, and a real tiny final training (``final-train --no-register``) of that trial."""

from __future__ import annotations

import argparse
import json

import pytest

from resume_ner.cli import register_command
from resume_ner.cli.main import common_parent
from resume_ner.errors import ConfigError
from resume_ner.workflows.final import run_final_training_workflow

PARAMS = {"training.learning_rate": 3e-3, "model.dropout": 0.1}


def _register(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="resume-ner")
    register_command.register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    args = parser.parse_args(["register", *argv])
    return args.func(args)


@pytest.fixture
def final_training(tiny_config, logged_sweep, tmp_path):
    """(tracking URI, the sweep's BestTrial dict, the final training's output dir, its run id), registered nowhere."""
    from resume_ner.data.synth import write_synthetic_resumes

    store = f"sqlite:///{(tmp_path / 'm.db').as_posix()}"
    best = logged_sweep(store, PARAMS, number=2)
    config = {**tiny_config, "data": {"test_fraction": 0.2},
              "tracking": {"enabled": True, "tracking_uri": store, "experiment_name": "final",
                           "registered_model_name": "resume-ner-aml"}}
    output = tmp_path / "final"
    data = write_synthetic_resumes(tmp_path / "data", 30, seed=5)
    outcome = run_final_training_workflow(config, output, data_path=data, best=best, register=False, quiet=True)
    assert outcome.model_version is None and outcome.run_id
    return store, best, output, outcome.run_id


@pytest.mark.timeout(300)
def test_register_makes_version_1_whose_lineage_names_the_best_trial_and_the_sweep(final_training, tmp_path, capsys,
                                                                                   monkeypatch):
    from mlflow import MlflowClient

    store, best, output, run_id = final_training
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(tmp_path / 'other.db').as_posix()}")  # --tracking-uri wins
    lineage_file = tmp_path / "lineage" / "lineage.json"  # the pipeline's lineage output
    assert _register(str(output), "--lineage-out", str(lineage_file), "--tracking-uri", store,
                     "--set", "tracking.registered_model_name=resume-ner-aml") == 0
    version = MlflowClient(tracking_uri=store).get_model_version("resume-ner-aml", "1")
    assert version.run_id == run_id and version.source == f"runs:/{run_id}/mlflow_model"  # the pyfunc model
    logged = MlflowClient(tracking_uri=store).list_artifacts(run_id, "mlflow_model")
    assert "mlflow_model/MLmodel" in {item.path for item in logged}  # built from the run's model/ artifacts
    lineage = json.loads(lineage_file.read_text())
    assert (lineage["model_name"], lineage["version"], lineage["final_run_id"]) == ("resume-ner-aml", "1", run_id)
    assert lineage["best_trial_run_id"] == best["mlflow_run_id"]
    assert lineage["sweep_parent_run_id"] == best["parent_run_id"]
    assert (lineage["study_name"], lineage["best_trial_number"]) == ("study", 2)
    assert lineage["trials"] == [{"number": 2, "state": "FINISHED", "run_id": best["mlflow_run_id"]}]
    assert sorted(lineage["aliases"]) == ["candidate", "champion"] and lineage["warnings"] == []
    out = capsys.readouterr().out
    assert "registered: models:/resume-ner-aml/1 (aliases: candidate, champion); champion moved: no champion yet" in out
    assert f"lineage ({lineage_file}):" in out and f"<- best trial  #2, run {best['mlflow_run_id']}" in out


def test_register_needs_the_final_trainings_mlflow_run(tmp_path):
    with pytest.raises(ConfigError, match=r"train_result.json: cannot read .*final-train --output-dir"):
        _register(str(tmp_path / "nowhere"))
    (tmp_path / "train_result.json").write_text(json.dumps({"model_dir": "model", "run_id": None}))
    with pytest.raises(ConfigError, match=r"train_result.json has no run_id: tracking was off or lost in the final "
                                          r"training"):
        _register(str(tmp_path))
    assert not (tmp_path / "lineage.json").exists()
