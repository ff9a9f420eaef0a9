"""``relog_output_dir`` and ``resume-ner tracking relog`` on local sqlite stores: a finished training (tracked
into one store) relogged into a new run of another store logs what the trainer logged; relogging completes a
run left RUNNING, changes nothing the second time, and refuses a failed run or another training's run."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from resume_ner.errors import ConfigError, TrackingError
from resume_ner.workflows.relog import RELOGGED_TAG, relog_command, relog_output_dir

STEP_ONLY_METRICS = {"train_loss", "learning_rate", "tokens_per_second"}  # per step: not kept in the directory


@pytest.fixture(scope="module")
def trained(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(output dir, its sqlite store, its run id) of a tiny training tracked by the trainer itself."""
    from resume_ner.config import config_from_dict
    from resume_ner.data.synth import write_synthetic_resumes
    from resume_ner.workflows.training import run_training_workflow

    root = tmp_path_factory.mktemp("trained")
    store = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    data = write_synthetic_resumes(root / "data", 30, seed=11)
    config = config_from_dict({
        "model": {"backbone": str(tiny_backbone), "max_length": 64, "stride": 16},
        "training": {"learning_rate": 1e-3, "epochs": 2, "num_threads": 1, "log_every_steps": 2},
        "tracking": {"experiment_name": "relog", "tags": {"team": "ner"}},
    })
    outcome = run_training_workflow(config, data, root / "run", tracking_uri=store, run_name="original", quiet=True)
    assert outcome.tracking_lost == [] and outcome.run_id
    return root / "run", store, outcome.run_id


@pytest.fixture
def copy(trained, tmp_path: Path) -> Path:
    """A copy of the trained output directory (relog may rewrite its train_result.json)."""
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def _store(tmp_path: Path, name: str = "other") -> str:
    return f"sqlite:///{(tmp_path / f'{name}.db').as_posix()}"


def _history(client, run_id: str) -> dict[str, list[int]]:
    run = client.get_run(run_id)
    return {key: sorted(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


def test_relog_into_a_new_run_logs_what_the_trainer_logged(trained, copy, tmp_path) -> None:
    from mlflow import MlflowClient

    _, store, original_id = trained
    target = _store(tmp_path)
    outcome = relog_output_dir(copy, tracking_uri=target)
    assert outcome.created and outcome.ended and outcome.changed

    original, relogged = MlflowClient(store), MlflowClient(target)
    before, after = original.get_run(original_id), relogged.get_run(outcome.run_id)
    assert after.info.status == "FINISHED" and after.info.run_name == "run"
    assert relogged.get_experiment(after.info.experiment_id).name == "relog"
    assert after.data.params == before.data.params  # the same keys and (redacted) values
    for key in ("resume_ner.data_fingerprint", "resume_ner.config_hash", "team"):
        assert after.data.tags[key] == before.data.tags[key]
    assert after.data.tags[RELOGGED_TAG] == str(copy.resolve())
    logged, relogged_steps = _history(original, original_id), _history(relogged, outcome.run_id)
    assert {key: logged[key] for key in relogged_steps} == relogged_steps  # every relogged value at its step
    assert {key for key in set(logged) - set(relogged_steps)
            if key not in STEP_ONLY_METRICS and not key.startswith("val.per_type.")} == set()
    assert {"epoch", "val_f1_micro", "test_f1_micro", "best_val_f1_micro", "test.per_type.SKILL.f1"} <= set(relogged_steps)
    assert {a.path for a in relogged.list_artifacts(outcome.run_id)} == \
        {a.path for a in original.list_artifacts(original_id)}
    result = json.loads((copy / "train_result.json").read_text())
    assert result["run_id"] == outcome.run_id and result["tracking_uri"] == target

    again = relog_output_dir(copy)  # the URI recorded in train_result.json, the run recorded there
    assert again.run_id == outcome.run_id and not again.changed
    assert _history(relogged, outcome.run_id) == relogged_steps


def test_relog_of_a_complete_run_changes_nothing(trained) -> None:
    from mlflow import MlflowClient

    directory, store, run_id = trained
    before = MlflowClient(store).get_run(run_id)
    outcome = relog_output_dir(directory)
    assert outcome.run_id == run_id and not outcome.changed
    assert MlflowClient(store).get_run(run_id).data.tags == before.data.tags


def test_relog_completes_a_running_run_without_duplicates(trained, copy, tmp_path) -> None:
    from mlflow import MlflowClient

    target = _store(tmp_path)
    client = MlflowClient(target)
    experiment_id = client.create_experiment("outage")
    run_id = client.create_run(experiment_id, run_name="half-logged").info.run_id
    first = json.loads((copy / "train_result.json").read_text())["history"][0]
    client.log_param(run_id, "training.epochs", "2")
    client.log_metric(run_id, "val_f1_micro", first["f1_micro"], step=first["step"])
    result = json.loads((copy / "train_result.json").read_text())
    (copy / "train_result.json").write_text(json.dumps({**result, "run_id": run_id, "tracking_uri": target}))

    outcome = relog_output_dir(copy)
    assert outcome.run_id == run_id and not outcome.created and outcome.ended
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[RELOGGED_TAG] == str(copy.resolve())
    assert _history(client, run_id)["val_f1_micro"] == [h["step"] for h in result["history"]]  # no duplicate
    assert "model" in {a.path for a in client.list_artifacts(run_id)}


def test_relog_refuses_a_failed_run_and_another_trainings_run(trained, copy, tmp_path) -> None:
    from mlflow import MlflowClient

    target = _store(tmp_path)
    client = MlflowClient(target)
    experiment_id = client.create_experiment("x")
    result = json.loads((copy / "train_result.json").read_text())
    failed = client.create_run(experiment_id).info.run_id
    client.set_terminated(failed, "FAILED")
    (copy / "train_result.json").write_text(json.dumps({**result, "run_id": failed, "tracking_uri": target}))
    with pytest.raises(TrackingError, match="ended FAILED"):
        relog_output_dir(copy)

    other = client.create_run(experiment_id).info.run_id
    client.log_param(other, "training.epochs", "9")
    (copy / "train_result.json").write_text(json.dumps({**result, "run_id": other, "tracking_uri": target}))
    with pytest.raises(TrackingError, match="another training's run"):
        relog_output_dir(copy)
    assert client.get_run(other).info.status == "RUNNING"


def test_relog_needs_a_finished_directory_and_a_reachable_server(copy, tmp_path) -> None:
    with pytest.raises(ConfigError, match="train_result.json: cannot read"):
        relog_output_dir(tmp_path / "nothing-here")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TrackingError, match=f"MLflow at http://127.0.0.1:{port}: cannot"):
        relog_output_dir(copy, tracking_uri=f"http://127.0.0.1:{port}")


def test_relog_command_line(copy, tmp_path, capsys) -> None:
    from resume_ner.cli.main import main

    target = _store(tmp_path)
    assert relog_command(copy, target) == f"resume-ner tracking relog {copy} --tracking-uri {target}"
    assert main(["tracking", "relog", str(copy), "--tracking-uri", target, "--experiment", "later",
                 "--run-name", "relogged", "-q"]) == 0
    assert "(created)" in capsys.readouterr().out
    assert main(["tracking", "relog", str(copy), "-q"]) == 0
    assert "nothing to relog" in capsys.readouterr().out


def test_relog_takes_where_to_log_from_config_dir_and_set(copy, tmp_path, capsys) -> None:
    """--config-dir / --set give the destination (URI, experiment, run name); what is logged stays the directory's."""
    from mlflow import MlflowClient

    from resume_ner.cli.main import main

    target = _store(tmp_path)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "tracking.yaml").write_text(f"tracking_uri: {target}\nexperiment_name: from-config-dir\n")
    assert main(["tracking", "relog", str(copy), "--config-dir", str(config_dir),
                 "--set", "tracking.run_name=from-set", "-q"]) == 0
    assert "(created)" in capsys.readouterr().out
    client = MlflowClient(target)
    run = client.get_run(json.loads((copy / "train_result.json").read_text())["run_id"])
    assert run.info.run_name == "from-set" and client.get_experiment(run.info.experiment_id).name == "from-config-dir"
    assert run.data.params["training.epochs"] == "2"  # the training as it was

    assert main(["tracking", "relog", str(copy), "--set", "training.epochs=3", "--set", "tracking.tags.a=b"]) == 1
    err = capsys.readouterr().err
    assert "only tracking.tracking_uri, tracking.experiment_name, tracking.run_name can be set" in err
    assert "--set training.epochs=3" in err and "--set tracking.tags.a=b" in err
    assert main(["tracking", "relog", str(copy), "--set", "tracking.experiment_nme=x"]) == 1
    assert "did you mean tracking.experiment_name?" in capsys.readouterr().err


def test_relog_logs_where_the_rule_says(trained, copy, tmp_path, monkeypatch, capsys) -> None:
    """--tracking-uri / --set > $MLFLOW_TRACKING_URI > the URI train_result.json records > config.yaml's."""
    from mlflow import MlflowClient

    from resume_ner.cli.main import main

    _, store, original_id = trained
    from_env, typed = _store(tmp_path, "from-env"), _store(tmp_path, "typed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", from_env)
    assert main(["tracking", "relog", str(copy), "--set", f"tracking.tracking_uri={typed}", "-q"]) == 0
    assert f"at {typed} (created)" in capsys.readouterr().out
    shutil.rmtree(copy)
    shutil.copytree(trained[0], copy)
    outcome = relog_output_dir(copy)
    assert outcome.created and outcome.tracking_uri == from_env  # the environment wins over the recorded URI
    assert MlflowClient(from_env).get_run(outcome.run_id).info.status == "FINISHED"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    shutil.rmtree(copy)
    shutil.copytree(trained[0], copy)
    outcome = relog_output_dir(copy)
    assert outcome.tracking_uri == store and outcome.run_id == original_id and not outcome.changed
