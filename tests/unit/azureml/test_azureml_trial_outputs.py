"""What a sweep trial leaves behind, from a real tiny training: the metric the sweep reads, and the output
directory the pipeline's select_best step reads."""

from __future__ import annotations

import argparse
import json
from typing import Any, get_args

import pytest

from resume_ner.azureml import build_final_training_config, create_hpo_sweep_job_for_backbone
from resume_ner.cli import azureml_commands
from resume_ner.cli.main import common_parent
from resume_ner.config import HpoConfig, ResumeNerConfig, load
from resume_ner.errors import ConfigError
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
def trial(tiny_backbone, synth_documents, tmp_path_factory):
    """A finished tiny training logged through a recording client: (its config, output dir, logged metrics)."""
    config = ResumeNerConfig.model_validate({
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"learning_rate": 1e-3, "epochs": EPOCHS, "random_seed": 13, "num_threads": 1,
                     "warmup_ratio": 0.0},
    })
    client = RecordingMlflowClient()
    output = tmp_path_factory.mktemp("trial") / "model"
    with TrackingRun(run_id="trial-run", tracking_uri="fake://", client=client) as run:
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


def test_select_best_merges_the_trials_searched_settings_into_the_base_config(trial, tmp_path):
    config, output, _ = trial
    out = tmp_path / "final-config"
    base = ["model.backbone=bert-base-cased", "training.epochs=6", "tracking.experiment_name=exp"]
    assert _select_best("--trial-dir", str(output), "--param", "training.learning_rate", "--param", "model.dropout",
                        "--out", str(out), *[f"--set={item}" for item in base]) == 0
    expected = build_final_training_config({"training.learning_rate": 1e-3, "model.dropout": config.model.dropout},
                                           load(None, base))
    assert load(out) == expected  # a --config-dir for final_train: the base, with the trial's searched values
    assert load(out).training.epochs == 6
    best = json.loads((out / "best_trial.json").read_text())
    result = json.loads((output / "train_result.json").read_text())
    assert best == {"params": {"training.learning_rate": 1e-3, "model.dropout": config.model.dropout},
                    "trial_dir": str(output), "metric": "f1_micro", "value": result["best_metric"],
                    "mlflow_run_id": "trial-run"}


def test_select_best_names_a_missing_trial_output_or_setting(trial, tmp_path):
    _, output, _ = trial
    with pytest.raises(ConfigError, match=r"--param training.nope: not a setting of .*config.yaml"):
        _select_best("--trial-dir", str(output), "--param", "training.nope", "--out", str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"config.yaml: cannot read .*expected the training output directory of "
                                          r"the sweep's best trial"):
        _select_best("--trial-dir", str(tmp_path), "--param", "training.learning_rate", "--out", str(tmp_path / "o"))
