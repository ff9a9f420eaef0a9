"""What a sweep trial leaves behind, from a real tiny training: the metric the sweep reads, and the output
directory the pipeline's select_best step reads (with the trial's and the sweep's runs in a real sqlite MLflow
store, or a stand-in for AzureML's, whose runs are named after their jobs)."""

from __future__ import annotations

import argparse
import json
import shutil
from types import SimpleNamespace
from typing import Any, get_args

import pytest

from resume_ner.azureml import build_final_training_config, create_hpo_sweep_job_for_backbone
from resume_ner.azureml.select import select_best_trial_config, sweep_parent_run_id, trial_number
from resume_ner.cli import azureml_commands
from resume_ner.cli.main import common_parent
from resume_ner.config import HpoConfig, ResumeNerConfig, load
from resume_ner.errors import ConfigError, TrackingError
from resume_ner.hpo.select import BestTrial
from resume_ner.tracking.lineage import final_run_tags
from resume_ner.tracking.mlflow import TrackingRun
from resume_ner.training.trainer import train_model

EPOCHS = 2


class RecordingMlflowClient:
    """Stands in for the ``MlflowClient`` of a ``TrackingRun``: records the (key, step) of every metric logged."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, int]] = []

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), synchronous: bool = True):
        self.metrics += [(metric.key, metric.step) for metric in metrics]

    def log_artifact(self, *args: Any) -> None:
        pass

    def log_artifacts(self, *args: Any) -> None:
        pass

    def set_terminated(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """A real sqlite MLflow store holding a sweep's run and one trial run under it, as AzureML's tracking store holds
    a sweep job and its trial jobs: (tracking URI, sweep run id, trial run id)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'm.db').as_posix()}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("exp")
    sweep = client.create_run(experiment, run_name="sweep-job").info.run_id
    trial = client.create_run(experiment, run_name="sweep-job_1", tags={"mlflow.parentRunId": sweep}).info.run_id
    return uri, sweep, trial


@pytest.fixture(scope="module")
def trial(tiny_backbone, synth_documents, sweep_runs, tmp_path_factory):
    """A finished tiny training of the trial run of ``sweep_runs``, its metrics logged through a recording client:
    (its config, output dir, logged metrics)."""
    config = ResumeNerConfig.model_validate({
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"learning_rate": 1e-3, "epochs": EPOCHS, "random_seed": 13, "num_threads": 1,
                     "warmup_ratio": 0.0},
    })
    client = RecordingMlflowClient()
    output = tmp_path_factory.mktemp("trial") / "model"
    with TrackingRun(run_id=sweep_runs[2], tracking_uri="fake://", client=client) as run:
        train_model(config, synth_documents[:20], synth_documents[40:50], output, tracking=run, quiet=True)
    return config, output, client.metrics


@pytest.mark.parametrize("metric", get_args(HpoConfig.model_fields["metric"].annotation))
def test_the_trainer_logs_every_epoch_the_metric_the_sweep_names(trial, metric):
    hpo = HpoConfig(metric=metric, sampler="random", direction="minimize" if metric == "loss" else "maximize")
    sweep = create_hpo_sweep_job_for_backbone("bert-base-cased", hpo_config=hpo, data_asset="azureml:resumes:1",
                                              environment="azureml:resume-ner:1", compute_cluster="gpu",
                                              aml_experiment_name="exp")
    name = sweep.objective.primary_metric
    _, _, logged = trial
    epochs_logged = [step for key, step in logged if key == name]
    assert len(epochs_logged) == EPOCHS, f"{name} logged {len(epochs_logged)} time(s); keys: {sorted(set(logged))}"
    assert epochs_logged == sorted(epochs_logged) and epochs_logged[0] > 0  # at each epoch's end, step by step


def _select_best(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="resume-ner")
    azureml_commands.register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    args = parser.parse_args(["azureml", "select-best", *argv])
    return args.func(args)


def test_select_best_merges_the_trials_searched_settings_into_the_base_config(trial, sweep_runs, tmp_path,
                                                                            monkeypatch, capsys):
    config, output, _ = trial
    uri, sweep, trial_run = sweep_runs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as AzureML sets it in the step
    out = tmp_path / "final-config"
    base = ["model.backbone=bert-base-cased", "training.epochs=6", "tracking.experiment_name=exp",
            "hpo.direction=maximize"]
    assert _select_best("--trial-dir", str(output), "--param", "training.learning_rate", "--param", "model.dropout",
                        "--out", str(out), *[f"--set={item}" for item in base]) == 0
    params = {"training.learning_rate": 1e-3, "model.dropout": config.model.dropout}
    expected = build_final_training_config(params, load(None, base))
    assert load(out) == expected  # a --config-dir for final_train: the base, with the trial's searched values
    assert load(out).training.epochs == 6
    best = json.loads((out / "best_trial.json").read_text())
    result = json.loads((output / "train_result.json").read_text())
    assert best == BestTrial(study_name=sweep, number=0, value=result["best_metric"], params=params, metric="f1_micro",
                             direction="maximize", mlflow_run_id=trial_run, parent_run_id=sweep,
                             checkpoint=str(output / "model"), data_fingerprint=result["data_fingerprint"]).to_dict()
    assert final_run_tags(best, test_data_fingerprint=None) == {  # what final-train --best-json tags its run with
        "resume_ner.stage": "final", "resume_ner.study": sweep, "resume_ner.best_trial_number": "0",
        "resume_ner.best_trial_run_id": trial_run, "resume_ner.sweep_parent_run_id": sweep}
    assert f"best trial #0 of sweep {sweep} (run {trial_run})" in capsys.readouterr().out


class AzureMLRuns:
    """Stands in for an ``MlflowClient`` on an AzureML workspace: runs named after their jobs."""

    def __init__(self, tags: dict[str, dict[str, str]]) -> None:
        self.tags = tags

    def get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        if run_id not in self.tags:
            raise MlflowException(f"Run '{run_id}' not found", error_code="RESOURCE_DOES_NOT_EXIST")
        return SimpleNamespace(data=SimpleNamespace(tags=self.tags[run_id]))


def _with_run_id(output, run_id, tmp_path):
    """A copy of the trial's output directory whose ``train_result.json`` names ``run_id``."""
    copy = tmp_path / "trial-copy"
    shutil.copytree(output, copy)
    result = json.loads((copy / "train_result.json").read_text())
    (copy / "train_result.json").write_text(json.dumps({**result, "run_id": run_id}))
    return copy


def test_an_azureml_trial_job_name_gives_the_trial_number(trial, tmp_path):
    config, output, _ = trial
    trial_dir = _with_run_id(output, "calm_lamp_8x7_3", tmp_path)
    client = AzureMLRuns({"calm_lamp_8x7_3": {"mlflow.parentRunId": "calm_lamp_8x7"}})
    best = select_best_trial_config(trial_dir, ["training.learning_rate"], config, tmp_path / "out", client=client)
    assert (best["study_name"], best["number"], best["mlflow_run_id"], best["parent_run_id"]) == (
        "calm_lamp_8x7", 3, "calm_lamp_8x7_3", "calm_lamp_8x7")
    assert (trial_number("sweep_12", "sweep"), trial_number("other_3", "sweep"), trial_number("sweep_x", "sweep")) \
        == (12, 0, 0)


def test_select_best_needs_the_trials_mlflow_run_and_its_sweep(trial, tmp_path):
    config, output, _ = trial
    client = AzureMLRuns({"orphan": {}})
    untracked = _with_run_id(output, None, tmp_path)
    with pytest.raises(ConfigError, match=r"train_result.json has no run_id: tracking was off or lost in the best "
                                          r"trial.*tracking.enabled=true"):
        select_best_trial_config(untracked, [], config, tmp_path / "out", client=client)
    shutil.rmtree(untracked)
    with pytest.raises(TrackingError, match=r"run orphan has no mlflow.parentRunId tag"):
        select_best_trial_config(_with_run_id(output, "orphan", tmp_path), [], config, tmp_path / "out", client=client)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TrackingError, match=r"cannot read the best trial's MLflow run gone: .*MLFLOW_TRACKING_URI"):
        sweep_parent_run_id("gone", client)


def test_select_best_names_a_missing_trial_output_or_setting(trial, tmp_path):
    _, output, _ = trial
    with pytest.raises(ConfigError, match=r"--param training.nope: not a setting of .*config.yaml"):
        _select_best("--trial-dir", str(output), "--param", "training.nope", "--out", str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"config.yaml: cannot read .*expected the training output directory of "
                                          r"the sweep's best trial"):
        _select_best("--trial-dir", str(tmp_path), "--param", "training.learning_rate", "--out", str(tmp_path / "o"))
