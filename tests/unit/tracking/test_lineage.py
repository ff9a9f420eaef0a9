"""Registration with candidate/champion aliases and the lineage walk, against a local sqlite MLflow store.

The sweep comes from the ``logged_sweep`` fixture (a parent run and a nested trial run, as the HPO trials
log them); the final run is built here with the lineage tags, ``best_trial.*`` params and a logged
checkpoint directory of placeholder files (registration does not load the weights).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pytest

from resume_ner.errors import TrackingError
from resume_ner.tracking.lineage import (
    CHECKPOINT_ARTIFACTS,
    Lineage,
    check_best_trial_runs,
    extract_lineage_from_best_model,
    final_run_tags,
    register_model,
    write_lineage,
)
from resume_ner.tracking.mlflow import standard_tags

TEST_FP = "a" * 64
OTHER_TEST_FP = "b" * 64
DATA_FP = "d" * 64
PARAMS = {"training.learning_rate": 3e-05, "model.dropout": 0.2}
_names = itertools.count()


@pytest.fixture(scope="module")
def client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


@pytest.fixture(scope="module")
def experiment_id(client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return client.create_experiment("lineage", artifact_location=tmp_path_factory.mktemp("artifacts").as_uri())


@pytest.fixture
def model_name() -> str:
    return f"resume-ner-{next(_names)}"


def _final_run(client, experiment_id: str, best: dict, tmp_path: Path, *, f1: float, test_fp: str = TEST_FP) -> str:
    """A finished final run with the lineage tags, best_trial.* params, test metrics and a logged checkpoint."""
    tags = {**standard_tags(data_fingerprint=DATA_FP, config_hash="c" * 16),
            **final_run_tags(best, test_data_fingerprint=test_fp)}
    run_id = client.create_run(experiment_id, run_name="final", tags=tags).info.run_id
    for key, value in best["params"].items():
        client.log_param(run_id, f"best_trial.{key}", str(value))
    client.log_param(run_id, "training.learning_rate", str(best["params"]["training.learning_rate"]))
    client.log_metric(run_id, "test_f1_micro", f1)
    model_dir = tmp_path / f"model-{run_id}"
    model_dir.mkdir()
    for name in CHECKPOINT_ARTIFACTS:
        (model_dir / name).write_text("{}")
    client.log_artifacts(run_id, str(model_dir), "model")
    served = tmp_path / f"mlflow-model-{run_id}"  # what registration looks for; serving tests build real ones
    served.mkdir()
    (served / "MLmodel").write_text("flavors: {}\n")
    client.log_artifacts(run_id, str(served), "mlflow_model")
    client.set_terminated(run_id)
    return run_id


@pytest.fixture
def register(client, experiment_id, store, tmp_path, logged_sweep):
    """``register(name, f1=..., test_fp=..., promote=..., best=...)``: a final run of ``best`` (a new sweep
    when None) registered as a version of ``name``."""

    def run(name: str, *, f1: float, test_fp: str = TEST_FP, promote: bool = False, best: dict | None = None):
        best = best or logged_sweep(store, PARAMS)
        run_id = _final_run(client, experiment_id, best, tmp_path, f1=f1, test_fp=test_fp)
        return register_model(run_id, name=name, test_metrics={"f1_micro": f1}, test_data_fingerprint=test_fp,
                              promote=promote, tracking_uri=store)

    return run


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def test_first_version_becomes_candidate_and_champion(client, register, model_name):
    first = register(model_name, f1=0.6)
    assert (first.version, first.aliases, first.promoted, first.previous_champion) == ("1", ["candidate", "champion"], True, None)
    assert "no champion" in first.reason
    assert _aliases(client, model_name) == {"candidate": "1", "champion": "1"}
    version = client.get_model_version(model_name, "1")
    assert version.source == f"runs:/{first.run_id}/mlflow_model" and version.run_id == first.run_id
    assert version.tags["resume_ner.test_data_fingerprint"] == TEST_FP
    assert float(version.tags["resume_ner.test_f1_micro"]) == 0.6
    run_tags = client.get_run(first.run_id).data.tags
    for key in ("resume_ner.study", "resume_ner.best_trial_number", "resume_ner.best_trial_run_id",
                "resume_ner.sweep_parent_run_id", "resume_ner.data_fingerprint", "resume_ner.config_hash"):
        assert version.tags[key] == run_tags[key]
    assert first.model_uri == f"models:/{model_name}/1"


def test_worse_version_is_candidate_only_and_better_one_takes_champion(client, register, model_name):
    register(model_name, f1=0.6)
    worse = register(model_name, f1=0.4)
    assert (worse.version, worse.aliases, worse.promoted) == ("2", ["candidate"], False)
    assert "does not beat" in worse.reason and "0.6000" in worse.reason
    assert _aliases(client, model_name) == {"candidate": "2", "champion": "1"}
    tie = register(model_name, f1=0.6)
    assert not tie.promoted  # must beat, not equal
    better = register(model_name, f1=0.7)
    assert better.promoted and better.previous_champion == "1" and "beats" in better.reason
    assert _aliases(client, model_name) == {"candidate": "4", "champion": "4"}


def test_promote_forces_champion(client, register, model_name):
    register(model_name, f1=0.9)
    forced = register(model_name, f1=0.1, promote=True)
    assert forced.promoted and forced.aliases == ["candidate", "champion"]
    assert "by request" in forced.reason and "replacing version 1" in forced.reason
    assert _aliases(client, model_name) == {"candidate": "2", "champion": "2"}


def test_champion_tested_on_other_test_data_is_not_replaced(client, register, model_name):
    register(model_name, f1=0.3, test_fp=OTHER_TEST_FP)
    newer = register(model_name, f1=0.99)
    assert not newer.promoted and newer.aliases == ["candidate"]
    assert "other test documents" in newer.reason and "--promote" in newer.reason
    assert _aliases(client, model_name) == {"candidate": "2", "champion": "1"}


def test_run_without_logged_checkpoint_is_not_registered(client, experiment_id, store, model_name):
    run_id = client.create_run(experiment_id).info.run_id
    with pytest.raises(TrackingError, match=r"no complete checkpoint under artifact path 'model'.*log_checkpoint"):
        register_model(run_id, name=model_name, test_metrics={"f1_micro": 0.5}, test_data_fingerprint=TEST_FP,
                       tracking_uri=store)


def test_a_run_without_its_mlflow_model_is_not_registered(client, experiment_id, store, logged_sweep, model_name,
                                                           tmp_path):
    run_id = _final_run(client, experiment_id, logged_sweep(store, PARAMS), tmp_path, f1=0.5)
    bare = client.create_run(experiment_id, tags=client.get_run(run_id).data.tags).info.run_id  # a checkpoint only
    client.log_artifacts(bare, str(tmp_path / f"model-{run_id}"), "model")
    with pytest.raises(TrackingError, match=r"no MLflow model under artifact path 'mlflow_model'.*log_serving_model"):
        register_model(bare, name=model_name, test_metrics={"f1_micro": 0.5}, test_data_fingerprint=TEST_FP,
                       tracking_uri=store)


def test_a_crf_run_without_its_logged_crf_scores_is_not_registered(client, experiment_id, store, logged_sweep,
                                                                   model_name, tmp_path):
    run_id = _final_run(client, experiment_id, logged_sweep(store, PARAMS), tmp_path, f1=0.5)
    client.log_param(run_id, "model.head", "crf")
    with pytest.raises(TrackingError, match=r"no complete checkpoint under artifact path 'model' \(missing "
                                            r"crf.safetensors\)"):
        register_model(run_id, name=model_name, test_metrics={"f1_micro": 0.5}, test_data_fingerprint=TEST_FP,
                       tracking_uri=store)
    (tmp_path / "crf.safetensors").write_text("{}")
    client.log_artifact(run_id, str(tmp_path / "crf.safetensors"), "model")
    assert register_model(run_id, name=model_name, test_metrics={"f1_micro": 0.5}, test_data_fingerprint=TEST_FP,
                          tracking_uri=store).version == "1"


def test_lineage_walks_version_final_run_trial_and_parent(client, store, register, logged_sweep, model_name):
    best = logged_sweep(store, PARAMS, number=7)
    registered = register(model_name, f1=0.55, best=best)
    register(model_name, f1=0.1)  # version 2: candidate only

    lineage = extract_lineage_from_best_model(f"{model_name}@champion", tracking_uri=store)
    version = client.get_model_version_by_alias(model_name, "champion")
    final = client.get_run(version.run_id)
    trial = client.get_run(final.data.tags["resume_ner.best_trial_run_id"])
    parent = client.get_run(trial.data.tags["mlflow.parentRunId"])
    assert (lineage.model_name, lineage.version, lineage.aliases) == (model_name, "1", ["champion"])
    assert lineage.source == version.source == f"runs:/{registered.run_id}/mlflow_model"
    assert lineage.final_run_id == final.info.run_id == registered.run_id
    assert lineage.best_trial_run_id == trial.info.run_id == best["mlflow_run_id"]
    assert lineage.sweep_parent_run_id == parent.info.run_id == best["parent_run_id"]
    assert lineage.study_name == "study" and lineage.best_trial_number == 7
    assert lineage.best_trial_params == {key: trial.data.params[f"sampled.{key}"] for key in PARAMS}
    assert trial.data.tags["resume_ner.trial_number"] == "7"
    assert lineage.data_fingerprint == final.data.tags["resume_ner.data_fingerprint"] == DATA_FP
    assert lineage.test_data_fingerprint == version.tags["resume_ner.test_data_fingerprint"] == TEST_FP
    assert lineage.final_run_metrics == {"test_f1_micro": 0.55}
    assert lineage.final_run_params == {"training.learning_rate": "3e-05"}
    assert lineage.config_hash == "c" * 16 and lineage.warnings == []

    for spec in (model_name, f"{model_name}/1", f"models:/{model_name}@champion", f"models:/{model_name}/1"):
        assert extract_lineage_from_best_model(spec, tracking_uri=store).version == "1", spec
    assert extract_lineage_from_best_model(f"{model_name}@candidate", tracking_uri=store).version == "2"


def test_plain_name_without_champion_means_latest_version(client, store, register, model_name):
    register(model_name, f1=0.5)
    register(model_name, f1=0.1)
    client.delete_registered_model_alias(model_name, "champion")
    assert extract_lineage_from_best_model(model_name, tracking_uri=store).version == "2"


def test_missing_links_name_the_link(client, store, register, logged_sweep, model_name):
    best = logged_sweep(store, PARAMS)
    register(model_name, f1=0.5, best=best)
    with pytest.raises(TrackingError, match=r"model 'nope@champion' not found .*registered_model_name"):
        extract_lineage_from_best_model("nope@champion", tracking_uri=store)
    with pytest.raises(TrackingError, match=r"expected NAME, NAME@ALIAS"):
        extract_lineage_from_best_model("models:/", tracking_uri=store)

    client.delete_run(best["parent_run_id"])
    with pytest.raises(TrackingError, match=r"missing link final run -> sweep parent run: run \w+ was deleted"):
        extract_lineage_from_best_model(f"{model_name}/1", tracking_uri=store)
    client.restore_run(best["parent_run_id"])
    client.delete_run(best["mlflow_run_id"])
    with pytest.raises(TrackingError, match=r"missing link final run -> best trial run: run \w+ was deleted"):
        extract_lineage_from_best_model(f"{model_name}/1", tracking_uri=store)
    client.restore_run(best["mlflow_run_id"])

    final_id = client.get_model_version(model_name, "1").run_id
    client.delete_tag(final_id, "resume_ner.best_trial_run_id")
    with pytest.raises(TrackingError, match=r"missing link final run -> best trial run: run \w+ has no tag "
                                            r"'resume_ner.best_trial_run_id'"):
        extract_lineage_from_best_model(f"{model_name}/1", tracking_uri=store)


def test_inconsistent_links_are_reported_as_warnings(client, store, register, logged_sweep, model_name):
    best = logged_sweep(store, PARAMS, number=2)
    register(model_name, f1=0.5, best={**best, "params": {**PARAMS, "model.dropout": 0.3}})
    client.set_tag(best["mlflow_run_id"], "resume_ner.trial_number", "8")
    lineage = extract_lineage_from_best_model(model_name, tracking_uri=store)
    assert len(lineage.warnings) == 2, lineage.warnings
    assert "logged model.dropout=0.2 but the final run applied 0.3" in lineage.warnings[0]
    assert "resume_ner.trial_number=8, but the final run names 2" in lineage.warnings[1]
    assert lineage.best_trial_params["model.dropout"] == "0.2"  # what the trial really ran with
    assert "warning: " in lineage.render()


def test_best_trial_runs_are_checked_before_training(store, logged_sweep):
    best = logged_sweep(store, PARAMS)
    check_best_trial_runs(best, store)
    with pytest.raises(TrackingError, match=r"has no mlflow_run_id .*--no-register"):
        check_best_trial_runs({**best, "mlflow_run_id": None}, store)
    with pytest.raises(TrackingError, match=r"run 0+ does not exist at sqlite"):
        check_best_trial_runs({**best, "parent_run_id": "0" * 32}, store)


def test_lineage_is_written_atomically_and_renders_the_path(store, register, tmp_path, model_name):
    register(model_name, f1=0.5)
    lineage = extract_lineage_from_best_model(model_name, tracking_uri=store)
    path = write_lineage(lineage, tmp_path / "out" / "lineage.json")
    assert Lineage(**json.loads(path.read_text())) == lineage
    assert not list(path.parent.glob(".*.tmp"))
    text = lineage.render()
    order = [f"{model_name} version 1", lineage.final_run_id, "study 'study'", lineage.sweep_parent_run_id,
             lineage.best_trial_run_id, "training.learning_rate=3e-05", DATA_FP]
    positions = [text.index(item) for item in order]
    assert positions == sorted(positions), text


def test_cli_lineage_show_prints_the_path(store, register, model_name, capsys):
    from resume_ner.cli import lineage_commands
    from resume_ner.cli.main import common_parent

    register(model_name, f1=0.5)
    parser = argparse.ArgumentParser(prog="resume-ner")
    lineage_commands.register(parser.add_subparsers(dest="command", required=True), [common_parent()])

    args = parser.parse_args(["lineage", "show", f"{model_name}@candidate", "--tracking-uri", store])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    lineage = extract_lineage_from_best_model(f"{model_name}@candidate", tracking_uri=store)
    assert f"{model_name} version 1 (aliases: candidate, champion" in out
    for run_id in (lineage.final_run_id, lineage.sweep_parent_run_id, lineage.best_trial_run_id):
        assert run_id in out
    args = parser.parse_args(["lineage", "show", f"models:/{model_name}/1", "--tracking-uri", store, "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out) == lineage.to_dict()
