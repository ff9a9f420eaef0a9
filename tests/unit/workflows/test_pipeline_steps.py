"""The pipeline steps as plain functions: their config, data input, split files, Optuna storage and exit handler."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from resume_ner.config import DataConfig, config_from_dict, load
from resume_ner.data.dataset import load_dataset
from resume_ner.data.synth import write_synthetic_resumes
from resume_ner.errors import ConfigError, DataValidationError
from resume_ner.io import content_digest
from resume_ner.k8s.final import final_train_on_pytorchjob
from resume_ner.tracking.mlflow import resolve_tracking_uri
from resume_ner.workflows.steps import (
    PIPELINE_CONFIG_ENV,
    SPLITS,
    end_pipeline_step,
    local_path,
    pipeline_config,
    prepare_data,
    resolve_optuna_storage,
    stage_splits,
)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    """20 synthetic annotated resumes in one Doccano JSONL file."""
    return write_synthetic_resumes(tmp_path / "raw", 20, 1)


def _outputs(directory: Path) -> dict[str, Path]:
    """KFP-style output artifact paths: no file extension, parent directories not yet there."""
    return {split: directory / split / "data" for split in SPLITS}


def _keys(documents) -> list[tuple[str, str, list]]:
    return [(d.id, d.text, [s.to_list() for s in d.spans]) for d in documents]


# --- pipeline_config -------------------------------------------------------------------------------------------


def test_named_parameters_win_over_overrides_and_empty_ones_leave_the_config():
    config = pipeline_config(["training.epochs=5", "model.backbone=from-override"], epochs=7, backbone="")
    assert config.training.epochs == 7  # the pipeline parameter wins
    assert config.model.backbone == "from-override"  # "" leaves the value of the overrides
    config = pipeline_config(["training.epochs=5"], epochs=0, n_trials=0, mlflow_uri="", model_name="")
    assert config.training.epochs == 5  # 0 leaves it
    default = load()
    assert config.hpo.n_trials == default.hpo.n_trials
    assert config.tracking.tracking_uri == default.tracking.tracking_uri
    assert config.tracking.registered_model_name == default.tracking.registered_model_name
    named = pipeline_config(n_trials=4, mlflow_uri="http://mlflow:5000", model_name="resume-ner-prod")
    assert named.hpo.n_trials == 4
    assert named.tracking.tracking_uri == "http://mlflow:5000"
    assert named.tracking.registered_model_name == "resume-ner-prod"


def test_the_mlflow_uri_typed_into_the_pipeline_wins_over_the_pods_environment(monkeypatch: pytest.MonkeyPatch):
    """The compiling machine's URI is not compiled in; a pod's MLFLOW_TRACKING_URI (a PodDefault, an image's ENV) is
    the run's environment, and the pipeline's mlflow_uri parameter, typed for the run, wins over it."""
    from resume_ner.kfp.pipelines import compiled_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://compiling-machine:5000")
    compiled = compiled_config(load(None, ["tracking.tracking_uri=http://from-the-files:5000"]))
    assert compiled.tracking.tracking_uri is None
    monkeypatch.setenv(PIPELINE_CONFIG_ENV, json.dumps(compiled.to_dict()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-the-pod:5000")
    typed = pipeline_config(mlflow_uri="http://typed:5000")
    assert resolve_tracking_uri(None, typed.tracking) == "http://typed:5000"
    assert resolve_tracking_uri(None, pipeline_config().tracking) == "http://from-the-pod:5000"


def test_a_task_given_gpus_trains_on_cuda():
    assert pipeline_config(gpu_count=1).training.device == "cuda"
    assert pipeline_config(["training.device=cpu"], gpu_count=0).training.device == "cpu"


def test_each_pipeline_run_gets_its_own_study_unless_one_is_named():
    default_study = load().hpo.study_name
    assert pipeline_config(pipeline_run_id="run-42").hpo.study_name == f"{default_study}-run-42"
    assert pipeline_config(["hpo.study_name=mine"], pipeline_run_id="run-42").hpo.study_name == "mine-run-42"
    assert pipeline_config(study_name="shared", pipeline_run_id="run-42").hpo.study_name == "shared"
    assert pipeline_config().hpo.study_name == default_study  # no pipeline run: the configured study


def test_config_dir_from_the_environment_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "train.yaml").write_text("epochs: 9\n", encoding="utf-8")
    monkeypatch.setenv("RESUME_NER_CONFIG_DIR", str(config_dir))
    assert pipeline_config().training.epochs == 9
    assert pipeline_config(epochs=2).training.epochs == 2


def test_the_compiled_config_is_the_base_of_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A pod gets the config the pipeline was compiled with as JSON (a mounted config dir no longer matters), then
    the run's overrides, then the named parameters."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "train.yaml").write_text("epochs: 9\n", encoding="utf-8")
    monkeypatch.setenv("RESUME_NER_CONFIG_DIR", str(config_dir))
    compiled = load(None, ["training.epochs=5", "training.learning_rate=1e-4", "pipeline.volume_claim=data"])
    monkeypatch.setenv(PIPELINE_CONFIG_ENV, json.dumps(compiled.to_dict()))
    config = pipeline_config(["training.learning_rate=2e-4"], n_trials=3)
    assert (config.training.epochs, config.training.learning_rate) == (5, 2e-4)
    assert (config.hpo.n_trials, config.pipeline.volume_claim) == (3, "data")
    with pytest.raises(ConfigError, match=r"--set training.epochs=zero: expected an integer"):
        pipeline_config(["training.epochs=zero"])  # a run's bad override is named, not the compiled config
    monkeypatch.setenv(PIPELINE_CONFIG_ENV, "{not json")
    with pytest.raises(ConfigError, match="RESUME_NER_PIPELINE_CONFIG is not JSON"):
        pipeline_config()
    monkeypatch.setenv(PIPELINE_CONFIG_ENV, json.dumps({"training": {"epochs": 0}}))
    with pytest.raises(ConfigError, match=r"\$RESUME_NER_PIPELINE_CONFIG: training.epochs"):
        pipeline_config()


def test_the_content_digest_changes_with_the_content_only(tmp_path: Path):
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "train.jsonl").write_text("a\n")
    (directory / "test.jsonl").write_text("b\n")
    first = content_digest(directory)
    os.utime(directory / "train.jsonl", (0, 0))
    assert content_digest(directory) == first  # file times do not count
    (directory / "test.jsonl").write_text("c\n")
    changed = content_digest(directory)
    assert changed != first
    (directory / "test.jsonl").rename(directory / "validation.jsonl")
    assert content_digest(directory) != changed  # the names count too
    assert content_digest(directory / "train.jsonl") != content_digest(directory / "validation.jsonl")


# --- local_path ------------------------------------------------------------------------------------------------


def test_local_path_accepts_a_path_and_a_file_url(data_file: Path):
    assert local_path(str(data_file)) == data_file
    assert local_path(data_file.as_uri()) == data_file
    assert local_path(str(data_file.parent)) == data_file.parent


@pytest.mark.parametrize("uri", ["s3://bucket/x", "gs://bucket/resumes.jsonl", "https://example.com/resumes.jsonl"])
def test_remote_data_uris_say_to_use_the_data_artifact_or_the_volume(uri: str):
    with pytest.raises(ConfigError) as caught:
        local_path(uri)
    message = str(caught.value)
    assert uri in message
    assert "`data` input artifact" in message and "volume" in message


def test_a_missing_data_path_is_named(tmp_path: Path):
    missing = tmp_path / "nowhere" / "resumes.jsonl"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        local_path(str(missing))
    assert str(missing) in str(caught.value)


# --- prepare_data ----------------------------------------------------------------------------------------------


def test_prepare_data_writes_the_three_splits_and_describes_them(data_file: Path, tmp_path: Path):
    outputs = _outputs(tmp_path / "out")
    prepared = prepare_data(str(data_file), load(), outputs=outputs)

    expected = load_dataset(data_file, DataConfig())
    input_ids = [json.loads(line)["id"] for line in data_file.read_text(encoding="utf-8").splitlines()]
    written = {split: [json.loads(line) for line in outputs[split].read_text(encoding="utf-8").splitlines()]
               for split in SPLITS}
    assert sorted(r["id"] for records in written.values() for r in records) == sorted(input_ids)
    assert all(written[split] for split in SPLITS)
    assert prepared.documents == {split: len(written[split]) for split in SPLITS}
    assert prepared.fingerprint == expected.fingerprint
    all_docs = expected.train + expected.validation + expected.test
    assert prepared.entities_per_type == dict(Counter(s.label for d in all_docs for s in d.spans))
    report = prepared.report_markdown
    assert expected.fingerprint in report
    for split in SPLITS:
        assert f"| {split} | {prepared.documents[split]} |" in report
    assert json.loads(json.dumps(prepared.to_dict()))["fingerprint"] == expected.fingerprint


def test_prepare_data_rejects_a_span_beyond_the_text_naming_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    good = {"id": "a", "text": "Jane Doe, Python developer", "labels": [[0, 8, "Name"]]}
    broken = {"id": "b", "text": "John Roe", "labels": [[0, 40, "Name"]]}
    bad.write_text(json.dumps(good) + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    outputs = _outputs(tmp_path / "out")
    with pytest.raises(DataValidationError) as caught:
        prepare_data(str(bad), load(), outputs=outputs)
    assert f"{bad}:2" in str(caught.value)
    assert not any(path.exists() for path in outputs.values())  # nothing half-written for the next steps


def test_prepare_data_needs_a_path_for_every_split(data_file: Path, tmp_path: Path):
    outputs = _outputs(tmp_path / "out")
    del outputs["test"]
    with pytest.raises(ConfigError, match="test"):
        prepare_data(str(data_file), load(), outputs=outputs)


# --- stage_splits ----------------------------------------------------------------------------------------------


def test_staged_splits_load_as_the_same_dataset_even_when_staged_twice(data_file: Path, tmp_path: Path):
    outputs = _outputs(tmp_path / "out")
    prepare_data(str(data_file), load(), outputs=outputs)
    expected = load_dataset(data_file, DataConfig())

    for _ in range(2):  # a retried task stages again into the same directory
        directory = stage_splits(outputs, tmp_path / "staged")
        assert sorted(p.name for p in directory.iterdir()) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
        staged = load_dataset(directory, DataConfig())
        assert _keys(staged.train) == _keys(expected.train)
        assert _keys(staged.validation) == _keys(expected.validation)
        assert _keys(staged.test) == _keys(expected.test)
        assert staged.fingerprint == expected.fingerprint


def test_staging_a_split_that_is_not_a_file_fails(tmp_path: Path):
    splits = {split: tmp_path / split for split in SPLITS}
    for split in ("train", "validation"):
        splits[split].write_text("", encoding="utf-8")
    splits["test"].mkdir()
    with pytest.raises(ConfigError, match="test split"):
        stage_splits(splits, tmp_path / "staged")


# --- Optuna storage, final training ----------------------------------------------------------------------------


def test_optuna_storage_parameter_then_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RESUME_NER_OPTUNA_STORAGE", "postgresql://optuna@db/optuna")
    assert resolve_optuna_storage("sqlite:///study.db") == "sqlite:///study.db"
    assert resolve_optuna_storage("") == "postgresql://optuna@db/optuna"
    monkeypatch.delenv("RESUME_NER_OPTUNA_STORAGE")
    with pytest.raises(ConfigError) as caught:
        resolve_optuna_storage("")
    assert "RESUME_NER_OPTUNA_STORAGE" in str(caught.value) and "optuna_storage parameter" in str(caught.value)


def test_multi_replica_final_training_is_refused_before_reading_anything(tmp_path: Path):
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match="replicas=2"):
        final_train_on_pytorchjob(load(), best_path=missing / "best.json", splits={s: missing / s for s in SPLITS},
                                  model_path=tmp_path / "model", replicas=2)
    assert not (tmp_path / "model").exists()


# --- exit handler ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final_status", "pipeline_status", "error"),
    [
        ({"state": "SUCCEEDED"}, "FINISHED", None),  # kfp.local
        ({"state": "COMPLETE", "error_message": None}, "FINISHED", None),  # the KFP backend
        ({"state": "FAILED", "error_message": "boom"}, "FAILED", "boom"),
        ({"state": "FAILED", "error_message": None}, "FAILED", "pipeline ended FAILED"),  # the backend sends none
    ],
)
def test_exit_handler_ends_the_pipeline_run_by_the_final_status(store, request, final_status, pipeline_status, error):
    from mlflow import MlflowClient

    from resume_ner.tracking.pipeline_run import open_pipeline_run

    experiment = f"exit-{request.node.callspec.id}"
    config = config_from_dict({"tracking": {"tracking_uri": store, "experiment_name": experiment}})
    pipeline = open_pipeline_run(config.tracking, "kfp-run-1", "resume-ner-training")
    pipeline_id = pipeline.run_id

    ended = end_pipeline_step(config, pipeline_run_id="kfp-run-1", final_status=final_status)

    run = MlflowClient(tracking_uri=store).get_run(pipeline_id)
    assert ended == [pipeline_id]
    assert run.info.status == pipeline_status
    assert run.data.tags["resume_ner.pipeline_status"] == ("SUCCEEDED" if error is None else "FAILED")
    assert run.data.tags.get("resume_ner.pipeline_error") == error
