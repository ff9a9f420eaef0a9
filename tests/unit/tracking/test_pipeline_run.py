"""The MLflow run of a pipeline run: opened once per pipeline run, parent and tag of its steps' runs, and ended
with all of them by the exit handler."""

from __future__ import annotations

import pytest

from resume_ner.config import ResumeNerConfig, TrackingConfig, config_from_dict
from resume_ner.hpo.trial import trial_config
from resume_ner.tracking.mlflow import setup_mlflow
from resume_ner.tracking.pipeline_run import (
    end_pipeline_run,
    find_pipeline_run,
    open_pipeline_run,
    with_pipeline_tracking,
)

PIPELINE = "resume-ner-training"
RUN_TAG = "resume_ner.pipeline_run_id"


@pytest.fixture
def tracking(store: str, request: pytest.FixtureRequest) -> TrackingConfig:
    return TrackingConfig(tracking_uri=store, experiment_name=f"pipeline-{request.node.name}")


@pytest.fixture
def client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


def _config(tracking: TrackingConfig, tags: dict[str, str] | None = None) -> ResumeNerConfig:
    return config_from_dict({"tracking": {**tracking.model_dump(mode="json"), "tags": tags or {}}})


# --- open / find -----------------------------------------------------------------------------------------------


def test_open_pipeline_run_creates_a_tagged_running_run_once_per_pipeline_run(tracking, client):
    run = open_pipeline_run(tracking, "kfp-run-1", PIPELINE)
    assert run.enabled
    stored = client.get_run(run.run_id)
    assert stored.info.status == "RUNNING"
    assert stored.data.tags["resume_ner.stage"] == "pipeline"
    assert stored.data.tags[RUN_TAG] == "kfp-run-1"
    assert "mlflow.parentRunId" not in stored.data.tags

    again = open_pipeline_run(tracking, "kfp-run-1", PIPELINE)  # a retried task
    assert again.run_id == run.run_id
    assert find_pipeline_run(tracking, "kfp-run-1") == run.run_id
    other = open_pipeline_run(tracking, "kfp-run-2", PIPELINE)
    assert other.run_id != run.run_id
    assert find_pipeline_run(tracking, "kfp-run-2") == other.run_id


def test_no_pipeline_run_without_tracking_or_before_it_is_opened(tracking):
    off = tracking.model_copy(update={"enabled": False})
    assert not open_pipeline_run(off, "kfp-run-1", PIPELINE).enabled
    assert find_pipeline_run(tracking, "never-opened") is None
    open_pipeline_run(tracking, "kfp-run-1", PIPELINE)
    assert find_pipeline_run(off, "kfp-run-1") is None


# --- the steps' runs -------------------------------------------------------------------------------------------


def test_step_config_tags_its_runs_and_nests_them_under_the_pipeline_run(tracking, client):
    config = _config(tracking, {"team": "nlp"})
    pipeline = open_pipeline_run(tracking, "kfp-run-1", PIPELINE)

    step = with_pipeline_tracking(config, "kfp-run-1")
    assert step.tracking.tags == {"team": "nlp", RUN_TAG: "kfp-run-1"}
    assert step.tracking.parent_run_id == pipeline.run_id
    assert config.tracking.tags == {"team": "nlp"} and config.tracking.parent_run_id is None  # not changed

    sweep = setup_mlflow(step.tracking, run_name="study")
    tags = client.get_run(sweep.run_id).data.tags
    assert tags["mlflow.parentRunId"] == pipeline.run_id
    assert tags[RUN_TAG] == "kfp-run-1" and tags["team"] == "nlp"

    trial = setup_mlflow(step.tracking, run_name="trial-0", nested=True, parent_run_id=sweep.run_id)
    tags = client.get_run(trial.run_id).data.tags
    assert tags["mlflow.parentRunId"] == sweep.run_id  # the explicit parent wins
    assert tags[RUN_TAG] == "kfp-run-1"
    trial.end()
    sweep.end()


def test_step_config_without_a_pipeline_mlflow_run_only_tags(tracking):
    config = _config(tracking, {"team": "nlp"})
    step = with_pipeline_tracking(config, "kfp-run-9")
    assert step.tracking.tags == {"team": "nlp", RUN_TAG: "kfp-run-9"}
    assert step.tracking.parent_run_id is None
    assert with_pipeline_tracking(config, "") is config


# --- end -------------------------------------------------------------------------------------------------------


def _pipeline_with_children(tracking: TrackingConfig, pipeline_run_id: str) -> tuple[str, str, str]:
    """(pipeline run, a child left RUNNING as by a killed pod, a child that FINISHED) of ``pipeline_run_id``."""
    pipeline = open_pipeline_run(tracking, pipeline_run_id, PIPELINE)
    step = with_pipeline_tracking(_config(tracking), pipeline_run_id)
    killed = setup_mlflow(step.tracking, run_name="killed")
    finished = setup_mlflow(step.tracking, run_name="finished")
    finished.end("FINISHED")
    return pipeline.run_id, killed.run_id, finished.run_id


def test_a_succeeded_pipeline_ends_its_run_finished_and_its_dangling_runs_failed(tracking, client):
    pipeline, killed, finished = _pipeline_with_children(tracking, "kfp-run-1")
    other_pipeline, other_running, other_finished = _pipeline_with_children(tracking, "kfp-run-2")

    ended = end_pipeline_run(tracking, "kfp-run-1", succeeded=True)

    assert sorted(ended) == sorted([pipeline, killed])
    status = {run_id: client.get_run(run_id).info.status for run_id in (pipeline, killed, finished)}
    assert status == {pipeline: "FINISHED", killed: "FAILED", finished: "FINISHED"}
    for run_id in (pipeline, killed, finished):
        tags = client.get_run(run_id).data.tags
        assert tags["resume_ner.pipeline_status"] == "SUCCEEDED"
        assert "resume_ner.pipeline_error" not in tags
    for run_id, expected in ((other_pipeline, "RUNNING"), (other_running, "RUNNING"), (other_finished, "FINISHED")):
        other = client.get_run(run_id)
        assert other.info.status == expected
        assert "resume_ner.pipeline_status" not in other.data.tags


def test_a_failed_pipeline_ends_its_run_failed_with_the_error(tracking, client):
    pipeline, killed, finished = _pipeline_with_children(tracking, "kfp-run-1")

    ended = end_pipeline_run(tracking, "kfp-run-1", succeeded=False, error="load-data failed")

    assert sorted(ended) == sorted([pipeline, killed])
    for run_id, expected in ((pipeline, "FAILED"), (killed, "FAILED"), (finished, "FINISHED")):
        run = client.get_run(run_id)
        assert run.info.status == expected
        assert run.data.tags["resume_ner.pipeline_status"] == "FAILED"
        assert run.data.tags["resume_ner.pipeline_error"] == "load-data failed"


def test_ending_a_pipeline_run_in_a_missing_experiment_or_without_tracking_does_nothing(tracking):
    assert end_pipeline_run(tracking, "kfp-run-1", succeeded=True) == []  # the experiment was never created
    off = tracking.model_copy(update={"enabled": False})
    assert end_pipeline_run(off, "kfp-run-1", succeeded=False, error="boom") == []


# --- HPO trials on a shared machine ----------------------------------------------------------------------------


def test_hpo_num_threads_sets_the_threads_of_each_trial():
    limited = config_from_dict({"training": {"num_threads": 4}, "hpo": {"num_threads": 1}})
    assert trial_config(limited, {}).training.num_threads == 1
    unset = config_from_dict({"training": {"num_threads": 4}, "hpo": {"num_threads": 0}})
    assert trial_config(unset, {}).training.num_threads == 4
