"""HPO sweeps with the tiny model: trials in sqlite, nested MLflow runs, resume, pruning, failures, report."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from resume_ner.cli.main import main
from resume_ner.config import SECTION_FILES, config_from_dict
from resume_ner.errors import ConfigError, ResumeNerError
from resume_ner.hpo.search_space import parse_search_space
from resume_ner.hpo.select import select_best
from resume_ner.hpo.study import create_or_load_study, resolve_storage
from resume_ner.hpo.sweep import run_local_hpo_sweep

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def hpo_data(tmp_path: Path) -> Path:
    """20 synthetic resumes: 16 train, 4 validation."""
    from resume_ner.data.synth import write_synthetic_resumes

    return write_synthetic_resumes(tmp_path / "data", 20, seed=3)


@pytest.fixture
def hpo_config(tiny_config: dict) -> dict:
    """Tiny model, 2 epochs, validation loss (it moves even when the tiny model finds no entity yet)."""
    config = copy.deepcopy(tiny_config)
    config["data"] = {"validation_fraction": 0.2, "test_fraction": 0.0}
    config["hpo"] = {
        "sampler": "random", "pruner": "none", "metric": "loss", "direction": "minimize",
        "search_space": {"training.learning_rate": {"type": "log_uniform", "min": 1e-4, "max": 3e-3}},
    }
    return config


def _states(study) -> list[str]:
    return [trial.state.name for trial in study.trials]


def _load(db: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def test_sweep_logs_nested_runs_and_a_rerun_adds_only_the_missing_trials(hpo_config, hpo_data, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    hpo_config["tracking"] = {"enabled": True, "tracking_uri": uri, "experiment_name": "hpo", "log_checkpoint": False}
    out = tmp_path / "out"
    best_config = run_local_hpo_sweep(hpo_config, "sweep", 4, data_path=hpo_data, output_dir=out)

    db = out / "hpo" / "sweep.db"
    study = _load(db, "sweep")
    assert _states(study) == ["COMPLETE"] * 4
    best = select_best(str(db), "sweep")
    assert best.value == min(t.value for t in study.trials) and best.metric == "loss"
    assert best_config["training"]["learning_rate"] == best.params["training.learning_rate"]
    assert Path(best.checkpoint, "model.safetensors").is_file()
    assert not (out / "trials" / f"trial-{best.number:04d}" / "checkpoints").exists()  # trials never resume

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("hpo")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.run_name == "sweep" and parent.info.status == "FINISHED"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id == best.parent_run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    by_number = {int(r.data.tags["resume_ner.trial_number"]): r for r in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    for trial in study.trials:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id and run.info.status == "FINISHED"
        assert run.data.tags["resume_ner.trial_state"] == "COMPLETE" and run.data.tags["resume_ner.study"] == "sweep"
        assert float(run.data.params["sampled.training.learning_rate"]) == trial.params["training.learning_rate"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] != []
    assert parent.data.metrics["best_loss"] == best.value
    assert parent.data.tags["resume_ner.best_trial"] == str(best.number)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "hpo")}
    assert {"hpo/trials.csv", "hpo/optimization_history.png", "hpo/param_importances.png",
            "hpo/intermediate_values.png", "hpo/best_trial.json"} <= artifacts
    assert {p.name for p in (out / "hpo" / "sweep").iterdir()} >= {"trials.csv", "optimization_history.png"}

    run_local_hpo_sweep(hpo_config, "sweep", 6, data_path=hpo_data, output_dir=out)
    study = _load(db, "sweep")
    assert _states(study) == ["COMPLETE"] * 6
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 1
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]) == 6
    assert len(set(t.params["training.learning_rate"] for t in study.trials)) == 6  # the rerun drew new values


def _precreated_study(config: dict, name: str, db: Path):
    """The study a sweep with ``config`` would create, so a test can enqueue trials before running it."""
    resolved = config_from_dict({**config, "hpo": {**config["hpo"], "study_name": name}})
    space = parse_search_space(resolved.hpo.search_space, resolved)
    return create_or_load_study(resolved.hpo, resolve_storage(str(db), db.parent, name, resolved.hpo), space)


def test_a_bad_trial_is_pruned_before_its_last_epoch(hpo_config, hpo_data, tmp_path):
    hpo_config["training"]["epochs"] = 3
    hpo_config["hpo"].update(pruner="median", n_startup_trials=1, n_warmup_epochs=0, search_space={
        "training.learning_rate": {"type": "choice", "values": [1e-3, 1e-12]}})
    db = tmp_path / "prune.db"
    study = _precreated_study(hpo_config, "prune", db)
    study.enqueue_trial({"training.learning_rate": 1e-3})
    study.enqueue_trial({"training.learning_rate": 1e-12})
    run_local_hpo_sweep(hpo_config, "prune", 2, data_path=hpo_data, output_dir=tmp_path / "out", storage=str(db))

    good, bad = _load(db, "prune").trials
    assert good.state.name == "COMPLETE" and sorted(good.intermediate_values) == [1, 2, 3]
    assert bad.state.name == "PRUNED"
    assert bad.user_attrs["pruned_epoch"] == 1 < 3
    assert bad.user_attrs["last_value"] == bad.intermediate_values[1] > good.intermediate_values[1]


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(hpo_config, hpo_data, tiny_backbone, tmp_path):
    missing = str(tmp_path / "no-such-backbone")
    hpo_config["hpo"]["search_space"] = {"model.backbone": {"type": "choice", "values": [str(tiny_backbone), missing]}}
    db = tmp_path / "fail.db"
    study = _precreated_study(hpo_config, "fail", db)
    for backbone in (missing, str(tiny_backbone), str(tiny_backbone)):
        study.enqueue_trial({"model.backbone": backbone})
    run_local_hpo_sweep(hpo_config, "fail", 2, data_path=hpo_data, output_dir=tmp_path / "out", storage=str(db))

    trials = _load(db, "fail").trials
    assert _states(_load(db, "fail")) == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "no-such-backbone" in trials[0].user_attrs["error"]


def test_a_sweep_whose_every_trial_fails_raises_with_the_errors(hpo_config, hpo_data, tmp_path):
    hpo_config["hpo"]["search_space"] = {"model.backbone": {"type": "choice", "values": [
        str(tmp_path / "missing-a"), str(tmp_path / "missing-b")]}}
    out = tmp_path / "out"
    with pytest.raises(ResumeNerError, match="all 2 trial\\(s\\) failed") as info:
        run_local_hpo_sweep(hpo_config, "broken", 2, data_path=hpo_data, output_dir=out)
    assert "missing-" in str(info.value)
    assert (out / "hpo" / "broken" / "trials.csv").read_text().count("FAIL") == 2  # the report is still written


def test_a_study_of_another_dataset_is_refused_before_training(hpo_config, hpo_data, tmp_path):
    db = tmp_path / "other.db"
    hpo = config_from_dict({**hpo_config, "hpo": {**hpo_config["hpo"], "study_name": "other"}}).hpo
    create_or_load_study(hpo, resolve_storage(str(db), tmp_path, "other", hpo),
                         parse_search_space(hpo.search_space, config_from_dict(hpo_config)), data_fingerprint="f" * 64)
    with pytest.raises(ConfigError, match="was run on dataset f{64} but this data is [0-9a-f]{64}"):
        run_local_hpo_sweep(hpo_config, "other", 2, data_path=hpo_data, output_dir=tmp_path / "out", storage=str(db))
    assert _load(db, "other").trials == []


def test_hpo_run_cli_prints_the_trials_and_the_best_one(hpo_config, hpo_data, tmp_path, capsys):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for section, content in hpo_config.items():
        (config_dir / SECTION_FILES[section]).write_text(yaml.safe_dump(content))
    out = tmp_path / "out"
    code = main(["hpo", "run", "--config-dir", str(config_dir), "--data", str(hpo_data), "--output-dir", str(out),
                 "--study", "cli", "--n-trials", "2", "--no-tracking"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["#", "state", "value"]
    assert printed.count("COMPLETE") == 2 and "best trial: " in printed and "training.learning_rate = " in printed
    assert (out / "hpo" / "cli.db").is_file() and (out / "hpo" / "cli" / "trials.csv").is_file()
    assert f"report: {out / 'hpo' / 'cli'}" in printed


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_dead_workers_trial_is_rerun_and_its_mlflow_run_ended_failed(hpo_config, hpo_data, tmp_path):
    import time

    from mlflow import MlflowClient

    from resume_ner.tracking.mlflow import setup_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    hpo_config["tracking"] = {"enabled": True, "tracking_uri": uri, "experiment_name": "hpo", "log_checkpoint": False}
    hpo_config["hpo"].update(heartbeat_interval=1, grace_period=1)
    db = tmp_path / "dead.db"
    study = _precreated_study(hpo_config, "dead", db)
    dead = study.ask()  # a worker took this trial, logged its run, then died: no more heartbeats
    parse_search_space(hpo_config["hpo"]["search_space"], config_from_dict(hpo_config)).suggest(dead)
    # the dead worker's run, created as another process would have (nothing of it stays open in this one)
    parent = setup_mlflow(config_from_dict(hpo_config).tracking, run_name="hpo")
    parent.end()
    dead_run = MlflowClient(uri).create_run(parent.experiment_id, run_name="trial-0").info
    dead.set_user_attr("mlflow_run_id", dead_run.run_id)
    study._storage.record_heartbeat(dead._trial_id)  # its last heartbeat, as optimize() would have sent
    time.sleep(2.5)  # > grace_period

    run_local_hpo_sweep(hpo_config, "dead", 1, data_path=hpo_data, output_dir=tmp_path / "out", storage=str(db))

    first, retry = _load(db, "dead").trials
    assert first.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params
    client = MlflowClient(uri)
    assert client.get_run(dead_run.run_id).info.status == "FAILED"
    rerun = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert rerun.data.tags["resume_ner.retry_of"] == "0" and rerun.info.status == "FINISHED"
