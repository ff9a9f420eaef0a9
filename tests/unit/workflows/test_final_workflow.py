"""The final training: config merging, the checks made before training, and registration of real trainings
of the tiny model on a local sqlite MLflow store (champion, then a worse candidate, then a forced one)."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest
import yaml

from resume_ner.config import ResumeNerConfig, config_from_dict
from resume_ner.errors import ConfigError, TrackingError
from resume_ner.workflows.final import build_final_training_config, run_final_training_workflow

GOOD = {"training.learning_rate": 3e-3, "model.dropout": 0.1}  # test f1_micro about 0.6 on 40 documents
WORSE = {"training.learning_rate": 1e-12, "model.dropout": 0.1}


# --- build_final_training_config ---------------------------------------------------------------------------


def test_nested_best_config_is_merged_setting_by_setting(tiny_config):
    config = build_final_training_config({"training": {"learning_rate": 3e-5}, "model": {"dropout": 0.2}}, tiny_config)
    assert config.training.learning_rate == 3e-5 and config.model.dropout == 0.2
    assert config.training.epochs == 2 and config.training.random_seed == 13  # the base's other settings stay
    assert config.model.backbone == tiny_config["model"]["backbone"] and config.tracking.enabled is False


def test_dotted_params_are_applied(tiny_config):
    config = build_final_training_config({"training.learning_rate": 3e-5, "training.batch_size": 16}, tiny_config)
    assert (config.training.learning_rate, config.training.batch_size) == (3e-5, 16)
    assert config.model.max_length == 64 and config.training.epochs == 2
    mixed = build_final_training_config({"training.learning_rate": 3e-5, "model": {"dropout": 0.25}}, tiny_config)
    assert (mixed.training.learning_rate, mixed.model.dropout) == (3e-5, 0.25)


def test_random_seed_overrides_the_base_and_the_best_config(tiny_config):
    assert build_final_training_config({}, tiny_config, random_seed=99).training.random_seed == 99
    nested = build_final_training_config({"training": {"random_seed": 5}}, tiny_config, random_seed=7)
    assert nested.training.random_seed == 7
    assert build_final_training_config({"training": {"random_seed": 5}}, tiny_config).training.random_seed == 5


def test_full_config_brings_its_model_sections_only(tiny_config):
    trial = config_from_dict({**tiny_config, "training": {**tiny_config["training"], "learning_rate": 2e-4},
                              "tracking": {"experiment_name": "sweep-experiment"}, "hpo": {"n_trials": 50}})
    base = config_from_dict({**tiny_config, "tracking": {"enabled": False, "experiment_name": "final"}})
    for best in (trial, trial.to_dict()):  # a config, or the nested dict run_local_hpo_sweep returns
        config = build_final_training_config(best, base)
        assert config.training.learning_rate == 2e-4
        assert config.tracking.experiment_name == "final" and config.tracking.enabled is False
        assert config.hpo.n_trials == base.hpo.n_trials
    assert build_final_training_config({}).to_dict() == ResumeNerConfig().to_dict()  # no base: defaults


def test_invalid_best_config_names_the_setting(tiny_config):
    with pytest.raises(ConfigError, match=r"best configuration: training.learning_rate"):
        build_final_training_config({"training": {"learning_rate": -1}}, tiny_config)
    with pytest.raises(ConfigError, match=r"trainer"):
        build_final_training_config({"trainer": {"epochs": 1}}, tiny_config)
    with pytest.raises(ConfigError, match=r"expected a dict"):
        build_final_training_config([("training.learning_rate", 1e-3)], tiny_config)


# --- checks before training --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from resume_ner.data.synth import write_synthetic_resumes

    return write_synthetic_resumes(tmp_path_factory.mktemp("data"), 40, seed=5)


def _tracked(tiny_config: dict, store: str, name: str) -> dict:
    config = copy.deepcopy(tiny_config)
    config["data"] = {"test_fraction": 0.2}
    config["tracking"] = {"enabled": True, "tracking_uri": store, "experiment_name": "final",
                          "registered_model_name": name}
    return config


def test_final_training_needs_a_best_trial(tiny_config, data_file, tmp_path):
    with pytest.raises(ConfigError, match=r"--study NAME --storage URL.*--best-json FILE.*resume-ner train"):
        run_final_training_workflow(tiny_config, tmp_path / "out", data_path=data_file)
    with pytest.raises(ConfigError, match=r"expected a mapping with study_name, number, params"):
        run_final_training_workflow(tiny_config, tmp_path / "out", data_path=data_file, best={"params": GOOD})
    with pytest.raises(ConfigError, match=r"not both"):
        run_final_training_workflow(tiny_config, tmp_path / "out", best={"params": {}}, study_name="s", storage="x.db")
    assert not (tmp_path / "out").exists()


def test_registration_is_checked_before_training(tiny_config, data_file, store, logged_sweep, tmp_path):
    untracked = {"study_name": "s", "number": 0, "params": {}}
    with pytest.raises(ConfigError, match=r"tracking.enabled=false.*--no-register"):
        run_final_training_workflow(tiny_config, tmp_path / "out", data_path=data_file, best=untracked)
    config = _tracked(tiny_config, store, "never-registered")
    with pytest.raises(TrackingError, match=r"has no mlflow_run_id .*--no-register"):
        run_final_training_workflow(config, tmp_path / "out", data_path=data_file, best=untracked)
    no_test = {**config, "data": {"test_fraction": 0.0}}
    with pytest.raises(ConfigError, match=r"the test split is empty.*data.test_fraction"):
        run_final_training_workflow(no_test, tmp_path / "out", data_path=data_file, best=logged_sweep(store, {}))
    assert not (tmp_path / "out").exists()


def test_train_plus_validation_trains_on_both_and_reports_on_validation(tiny_config, data_file, tmp_path, monkeypatch):
    import resume_ner.workflows.final as final

    seen = {}

    class Stop(Exception):
        pass

    def fake_train_model(config, train_data, val_data, output_dir, **kwargs):
        seen.update(config=config, train=list(train_data), val=list(val_data))
        raise Stop

    monkeypatch.setattr(final, "train_model", fake_train_model)  # the name the workflow calls
    config = {**tiny_config, "final": {"train_on": "train+validation"},
              "training": {**tiny_config["training"], "early_stopping_patience": 2}}
    with pytest.raises(Stop):
        run_final_training_workflow(config, tmp_path / "out", data_path=data_file, register=False,
                                    best={"study_name": "s", "number": 0, "params": {}})
    from resume_ner.data.dataset import load_dataset

    dataset = load_dataset(data_file, seen["config"].data)
    assert seen["train"] == dataset.train + dataset.validation and seen["val"] == dataset.validation
    assert seen["config"].training.early_stopping_patience == 0


# --- real final trainings ----------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_final_trainings_register_champion_then_candidate_then_forced_champion(
    tiny_config, data_file, store, logged_sweep, tmp_path, capsys
):
    from mlflow import MlflowClient

    from resume_ner.cli import lineage_commands
    from resume_ner.cli.main import common_parent
    from resume_ner.data.dataset import load_dataset
    from resume_ner.data.splits import fingerprint_documents

    client = MlflowClient(tracking_uri=store)
    config = _tracked(tiny_config, store, "final-unit")
    best = logged_sweep(store, GOOD, number=4)

    first = run_final_training_workflow(config, tmp_path / "first", data_path=data_file, best=best,
                                        run_name="final-1", quiet=True)
    assert (first.model_version, first.model_uri, first.promoted) == ("1", "models:/final-unit/1", True)
    assert first.tracking_lost == [] and "no champion" in first.promotion_reason
    aliases = client.get_registered_model("final-unit").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"candidate": "1", "champion": "1"}

    run = client.get_run(first.run_id)
    test_documents = load_dataset(data_file, config_from_dict(config).data).test
    tags = run.data.tags
    assert tags["resume_ner.stage"] == "final" and tags["resume_ner.study"] == "study"
    assert tags["resume_ner.best_trial_number"] == "4"
    assert tags["resume_ner.best_trial_run_id"] == best["mlflow_run_id"]
    assert tags["resume_ner.sweep_parent_run_id"] == best["parent_run_id"]
    assert tags["resume_ner.data_fingerprint"] == first.train_result.data_fingerprint
    assert tags["resume_ner.test_data_fingerprint"] == fingerprint_documents(test_documents)
    assert tags["resume_ner.test_data_fingerprint"] == first.test_metrics["test_data_fingerprint"]
    assert tags["resume_ner.config_hash"] == first.train_result.config_hash
    assert tags["resume_ner.registered_model"] == "models:/final-unit/1"
    assert run.data.params["best_trial.training.learning_rate"] == "0.003"
    assert run.data.params["training.learning_rate"] == "0.003" and run.data.params["training.epochs"] == "2"
    assert run.data.metrics["test_f1_micro"] == first.test_metrics["f1_micro"]
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"model", "lineage.json", "test_metrics.json"} <= artifacts

    assert first.lineage_path == tmp_path / "first" / "lineage.json"
    written = json.loads(first.lineage_path.read_text())
    assert written == first.lineage.to_dict()
    assert (written["final_run_id"], written["best_trial_run_id"], written["sweep_parent_run_id"]) == (
        first.run_id, best["mlflow_run_id"], best["parent_run_id"])
    assert written["best_trial_params"] == {"training.learning_rate": "0.003", "model.dropout": "0.1"}

    worse = run_final_training_workflow(config, tmp_path / "second", data_path=data_file,
                                        best=logged_sweep(store, WORSE), quiet=True)
    assert (worse.model_version, worse.promoted) == ("2", False)
    assert worse.test_metrics["f1_micro"] < first.test_metrics["f1_micro"]
    assert "does not beat" in worse.promotion_reason
    aliases = client.get_registered_model("final-unit").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"candidate": "2", "champion": "1"}

    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for section, file in (("model", "model.yaml"), ("training", "train.yaml"), ("tracking", "tracking.yaml"),
                          ("data", "data.yaml")):
        (config_dir / file).write_text(yaml.safe_dump(config[section]))
    (tmp_path / "best.json").write_text(json.dumps(logged_sweep(store, WORSE, number=9)))
    parser = argparse.ArgumentParser(prog="resume-ner")
    lineage_commands.register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    args = parser.parse_args(["final-train", "--config-dir", str(config_dir), "--data", str(data_file),
                              "--output-dir", str(tmp_path / "third"), "--best-json", str(tmp_path / "best.json"),
                              "--promote", "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "best trial: study 'study' #9 (training.learning_rate=1e-12, model.dropout=0.1)" in out
    assert "registered: models:/final-unit/3 (aliases: candidate, champion); champion moved: promoted by request" in out
    assert "f1_micro" in out and "<- best trial  #9" in out
    aliases = client.get_registered_model("final-unit").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"candidate": "3", "champion": "3"}
