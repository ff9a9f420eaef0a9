"""The MLflow run of one pipeline run, and its end by the pipeline's exit handler.

``load_data`` opens it (tags ``resume_ner.stage=pipeline`` and ``resume_ner.pipeline_run_id``; a retried
task reattaches to the same run) and leaves it RUNNING: the sweep's parent run and the final training run
of the same pipeline run are nested under it (``tracking.parent_run_id``) and carry the same
``resume_ner.pipeline_run_id`` tag (``tracking.tags``). The exit handler, which runs whether the pipeline
succeeded or not, calls ``end_pipeline_run``: the run ends FINISHED or FAILED, and every run of that pipeline
run still RUNNING (a task killed by Kubernetes never ends its own runs) is marked FAILED.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from resume_ner.config import ResumeNerConfig, TrackingConfig, config_from_dict
from resume_ner.tracking.lineage import PIPELINE_RUN_TAG, STAGE_TAG
from resume_ner.tracking.mlflow import TrackingRun, resolve_tracking_uri, setup_mlflow

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

PIPELINE_NAME_TAG = "resume_ner.pipeline"
PIPELINE_STATUS_TAG = "resume_ner.pipeline_status"
PIPELINE_ERROR_TAG = "resume_ner.pipeline_error"
PIPELINE_STAGE = "pipeline"
PAGE_SIZE = 1000


def with_pipeline_tracking(config: ResumeNerConfig, pipeline_run_id: str) -> ResumeNerConfig:
    """``config`` whose runs carry the tag of pipeline run ``pipeline_run_id`` and nest under its MLflow run
    (when ``start_pipeline_run`` opened one); ``config`` itself without a pipeline run id."""
    if not pipeline_run_id:
        return config
    raw = config.to_dict()
    raw["tracking"]["tags"] = {**raw["tracking"]["tags"], PIPELINE_RUN_TAG: pipeline_run_id}
    parent = find_pipeline_run(config.tracking, pipeline_run_id)
    if parent:
        raw["tracking"]["parent_run_id"] = parent
    return config_from_dict(raw, origin="pipeline tracking")


def _runs_of(client: MlflowClient, experiment_id: str, pipeline_run_id: str, extra: str = "") -> list[Run]:
    """Every run of the experiment tagged with ``pipeline_run_id`` (and matching ``extra``), page by page."""
    query = f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}'" + extra
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=PAGE_SIZE, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def find_pipeline_run(tracking: TrackingConfig, pipeline_run_id: str) -> str | None:
    """The id of the MLflow run of ``pipeline_run_id``, or None (none opened, tracking off or unreachable)."""
    from mlflow import MlflowClient

    if not tracking.enabled:
        return None
    try:
        client = MlflowClient(tracking_uri=resolve_tracking_uri(None, tracking))
        experiment = client.get_experiment_by_name(tracking.experiment_name)
        found = (
            []
            if experiment is None
            else _runs_of(
                client, experiment.experiment_id, pipeline_run_id, f" and tags.`{STAGE_TAG}` = '{PIPELINE_STAGE}'"
            )
        )
    except Exception as exc:  # noqa: BLE001 - the step's own tracking reports an unreachable server
        log.warning("MLflow: cannot look up the run of pipeline run %s: %s", pipeline_run_id, exc)
        return None
    return found[0].info.run_id if found else None


def open_pipeline_run(tracking: TrackingConfig, pipeline_run_id: str, pipeline_name: str) -> TrackingRun:
    """The RUNNING MLflow run of ``pipeline_run_id``: created, or found again when a retried task asks twice.

    Disabled when tracking is off or MLflow cannot be reached (the pipeline then runs without tracking).
    """
    if not tracking.enabled:
        return TrackingRun.disabled()
    found = find_pipeline_run(tracking, pipeline_run_id)
    if found:
        log.info("MLflow: reattaching to the run %s of pipeline run %s", found, pipeline_run_id)
        return TrackingRun.attach(found, resolve_tracking_uri(None, tracking))
    tags = {PIPELINE_RUN_TAG: pipeline_run_id, PIPELINE_NAME_TAG: pipeline_name, STAGE_TAG: PIPELINE_STAGE}
    top_level = tracking.model_copy(update={"parent_run_id": None})
    return setup_mlflow(top_level, run_name=f"{pipeline_name}-{pipeline_run_id[:12]}", tags=tags)


def end_pipeline_run(
    tracking: TrackingConfig, pipeline_run_id: str, *, succeeded: bool, error: str | None = None
) -> list[str]:
    """End the runs of ``pipeline_run_id``: its pipeline run FINISHED or FAILED, any other RUNNING one FAILED.

    Every run of the pipeline run gets ``resume_ner.pipeline_status`` (SUCCEEDED or FAILED, with
    ``resume_ner.pipeline_error`` when given). Returns the ids of the runs this call ended.
    """
    from mlflow import MlflowClient

    if not tracking.enabled:
        return []
    client = MlflowClient(tracking_uri=resolve_tracking_uri(None, tracking))
    experiment = client.get_experiment_by_name(tracking.experiment_name)
    if experiment is None:
        log.warning(
            "MLflow experiment %r does not exist: no run of pipeline run %s to end",
            tracking.experiment_name,
            pipeline_run_id,
        )
        return []
    status_tags = {PIPELINE_STATUS_TAG: "SUCCEEDED" if succeeded else "FAILED"}
    if error:
        status_tags[PIPELINE_ERROR_TAG] = error[:5000]
    ended = []
    for run in _runs_of(client, experiment.experiment_id, pipeline_run_id):
        for key, value in status_tags.items():
            client.set_tag(run.info.run_id, key, value)
        if run.info.status != "RUNNING":
            continue
        is_pipeline = run.data.tags.get(STAGE_TAG) == PIPELINE_STAGE
        status = "FINISHED" if succeeded and is_pipeline else "FAILED"
        client.set_terminated(run.info.run_id, status)
        ended.append(run.info.run_id)
        log.info(
            "MLflow run %s (%s) of pipeline run %s ended %s",
            run.info.run_id,
            run.info.run_name,
            pipeline_run_id,
            status,
        )
    return ended
