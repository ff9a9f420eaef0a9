"""Submit AzureML jobs, wait for them, and check that a finished sweep or final training produced its results.

``submit_and_wait_for_job`` submits with ``ml_client.jobs.create_or_update`` and polls ``ml_client.jobs.get``
until the job is ``Completed`` (returned), ``Failed`` or ``Canceled`` (``ResumeNerError`` with the error AzureML
recorded), or the timeout passes (the job is then cancelled, or left running with ``on_timeout="leave"``).
``NotResponding`` and ``Paused`` are waited through: AzureML documents that a job can leave them. A few failed
status reads in a row (network) are tolerated.

``validate_sweep_job`` and ``validate_final_training_job`` check a finished job and raise ``ResumeNerError``
naming everything that is missing. A sweep's best trial and its primary metric value are the properties
``best_child_run_id`` and ``score`` that AzureML sets on the sweep; its trials are its child jobs. A final
training's results are the JSON files of its ``metrics`` output (``train_result.json``, ``test_metrics.json``).

``deploy_online_endpoint`` creates or updates an online endpoint, then its deployment (``azureml.endpoint``), and
routes the endpoint's traffic to it.

``azure.ai.ml`` and ``azure.identity`` are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume_ner.azureml.jobs import BACKBONE_TAG, METRICS_OUTPUT, MODEL_OUTPUT
from resume_ner.errors import ConfigError, ResumeNerError
from resume_ner.layout import RESULT_FILE, TEST_METRICS_FILE

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import (
        CommandJob,
        Job,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        OnlineEndpoint,
        SweepJob,
    )

log = logging.getLogger(__name__)

COMPLETED = "Completed"
FAILED_STATES = ("Failed", "Canceled")
TIMEOUT_ACTIONS = ("cancel", "leave")
MAX_POLL_FAILURES = 5  # consecutive failed status reads before giving up
MAX_ERROR_CHARS = 2000
BEST_CHILD_PROPERTY = "best_child_run_id"
SCORE_PROPERTY = "score"
WORKSPACE_ENV = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "resource_group_name": "AZURE_RESOURCE_GROUP",
    "workspace_name": "AZUREML_WORKSPACE_NAME",
}


def workspace_client(
    subscription_id: str | None = None, resource_group: str | None = None, workspace_name: str | None = None
) -> MLClient:
    """An ``MLClient`` of the workspace (each value: the argument, else its environment variable) signed in
    with ``DefaultAzureCredential`` (``az login``, a managed identity, ``AZURE_CLIENT_ID``/``..._SECRET``...)."""
    given = {
        "subscription_id": subscription_id,
        "resource_group_name": resource_group,
        "workspace_name": workspace_name,
    }
    values = {key: value or os.environ.get(WORKSPACE_ENV[key]) for key, value in given.items()}
    missing = [
        f"{WORKSPACE_ENV[key]} (--{key.replace('_name', '').replace('_', '-')})"
        for key, value in values.items()
        if not value
    ]
    if missing:
        raise ConfigError(f"no AzureML workspace: set {', '.join(missing)}")
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), **values)


def _where(job: Job) -> str:
    url = getattr(job, "studio_url", None)
    return f"AzureML job {job.name}" + (f" ({url})" if url else "")


def _job_error(ml_client: MLClient, job: Job) -> str:
    """The error AzureML recorded on a failed job, as ``ml_client.jobs.stream`` raises it (its log is dropped)."""
    if job.status != "Failed":
        return "canceled"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ml_client.jobs.stream(job.name)
    except Exception as exc:  # noqa: BLE001 - the SDK raises the run's error, whatever its class
        return " ".join(str(exc).split())[:MAX_ERROR_CHARS]
    return "AzureML recorded no error message; see the job's logs"


def submit_and_wait_for_job(
    ml_client: MLClient,
    job: Job,
    *,
    timeout: float = 6 * 3600,
    poll_interval: float = 30.0,
    on_timeout: str = "cancel",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Job:
    """Submit ``job`` and poll it every ``poll_interval`` seconds until it completes; the completed job.

    Raises ``ResumeNerError`` when it fails or is canceled (with AzureML's error), or after ``timeout`` seconds
    (``on_timeout="cancel"`` cancels it first, ``"leave"`` leaves it running).
    """
    from azure.core.exceptions import AzureError

    if on_timeout not in TIMEOUT_ACTIONS:
        raise ConfigError(f"on_timeout={on_timeout!r}: expected one of {', '.join(TIMEOUT_ACTIONS)}")
    submitted = ml_client.jobs.create_or_update(job)
    log.info("submitted %s", _where(submitted))
    deadline = clock() + timeout
    status, failures = getattr(submitted, "status", None), 0
    while True:
        try:
            current = ml_client.jobs.get(submitted.name)
        except AzureError as exc:
            failures += 1
            if failures >= MAX_POLL_FAILURES:
                raise ResumeNerError(
                    f"{_where(submitted)}: {failures} status reads failed in a row (last: {exc}); "
                    "it may still be running: check it in the studio"
                ) from exc
            log.warning("%s: status read failed (%s); retrying", _where(submitted), exc)
        else:
            failures = 0
            if current.status != status:
                status = current.status
                log.info("%s: %s", _where(current), status)
            if status == COMPLETED:
                return current
            if status in FAILED_STATES:
                raise ResumeNerError(f"{_where(current)} {status}: {_job_error(ml_client, current)}")
        remaining = deadline - clock()
        if remaining <= 0:
            if on_timeout == "cancel":
                ml_client.jobs.begin_cancel(submitted.name)
            action = "cancellation requested" if on_timeout == "cancel" else "left running"
            raise ResumeNerError(
                f"{_where(submitted)} did not finish within {timeout:.0f}s (last status {status}): "
                f"{action}; raise the timeout, or wait for it in the studio"
            )
        sleep(min(poll_interval, remaining))


def _raise_problems(what: str, problems: list[str]) -> None:
    if problems:
        raise ResumeNerError(f"{what} is incomplete: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


def _finished_problems(job: CommandJob | SweepJob, outputs: tuple[str, ...]) -> list[str]:
    problems = [] if job.status == COMPLETED else [f"status is {job.status}, not {COMPLETED}"]
    present = set(job.outputs or {})
    problems += [f"no {name!r} output" for name in outputs if name not in present]
    return problems


def validate_sweep_job(
    job: SweepJob, backbone: str, ml_client: MLClient | None = None, *, min_completed_trials: int = 1
) -> dict[str, Any]:
    """Check a finished sweep of ``backbone``: completed, tagged with that backbone, a best trial with a value
    of the primary metric, a ``model`` output and, with ``ml_client``, at least ``min_completed_trials``
    completed trials. Returns ``{"best_trial", "score", "primary_metric", "trials": {status: count}}``."""
    problems = _finished_problems(job, (MODEL_OUTPUT,))
    tagged = (job.tags or {}).get(BACKBONE_TAG)
    if tagged != backbone:
        problems.append(f"tag {BACKBONE_TAG} is {tagged!r}, not {backbone!r} (the sweep of another backbone?)")
    metric = job.objective.primary_metric if job.objective is not None else None
    properties = job.properties or {}
    best, score = properties.get(BEST_CHILD_PROPERTY), properties.get(SCORE_PROPERTY)
    if not best:
        problems.append(f"no best trial (property {BEST_CHILD_PROPERTY}): did any trial finish?")
    if score is None:
        problems.append(
            f"no value of the primary metric {metric!r} (property {SCORE_PROPERTY}): the trials did "
            "not log it; check the image's MLflow setup (azureml-mlflow) and the metric name"
        )
    trials: Counter[str] = Counter()
    if ml_client is not None:
        trials.update(child.status for child in ml_client.jobs.list(parent_job_name=job.name))
        if trials[COMPLETED] < min_completed_trials:
            problems.append(
                f"{trials[COMPLETED]} completed trial(s), expected at least {min_completed_trials} "
                f"({', '.join(f'{n} {s}' for s, n in sorted(trials.items())) or 'no trials'})"
            )
    _raise_problems(f"AzureML sweep {job.name} of {backbone}", problems)
    assert score is not None  # a missing score is a problem, raised above
    return {"best_trial": best, "score": float(score), "primary_metric": metric, "trials": dict(trials)}


def _read_result(folder: Path, name: str, problems: list[str], hint: str = "") -> dict[str, Any]:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{METRICS_OUTPUT} output: no readable {name} ({type(exc).__name__}){hint}")
        return {}


def validate_final_training_job(job: CommandJob, ml_client: MLClient | None = None) -> dict[str, Any]:
    """Check a finished final training: completed, ``model`` and ``metrics`` outputs and, with ``ml_client``
    (their files are downloaded), a best validation metric in ``train_result.json`` and the test metrics in
    ``test_metrics.json``. Returns ``{"metric", "best_metric", "test_f1_micro"}`` (values None without client)."""
    problems = _finished_problems(job, (MODEL_OUTPUT, METRICS_OUTPUT))
    summary: dict[str, Any] = {"metric": None, "best_metric": None, "test_f1_micro": None}
    if ml_client is not None and not problems:
        with tempfile.TemporaryDirectory(prefix="resume-ner-aml-") as tmp:
            ml_client.jobs.download(job.name, download_path=tmp, output_name=METRICS_OUTPUT)
            folder = Path(tmp) / "named-outputs" / METRICS_OUTPUT
            result = _read_result(folder, RESULT_FILE, problems)
            test = _read_result(
                folder, TEST_METRICS_FILE, problems, ": the data has no test split, so the model was not tested"
            )
        summary.update(
            metric=result.get("metric"), best_metric=result.get("best_metric"), test_f1_micro=test.get("f1_micro")
        )
        if result and summary["best_metric"] is None:
            problems.append(
                f"{RESULT_FILE} has no best validation {summary['metric']}: the data has no validation split"
            )
        if test and summary["test_f1_micro"] is None:
            problems.append(f"{TEST_METRICS_FILE} has no f1_micro")
    _raise_problems(f"AzureML final training {job.name}", problems)
    return summary


def deploy_online_endpoint(
    ml_client: MLClient,
    endpoint: ManagedOnlineEndpoint,
    deployment: ManagedOnlineDeployment,
    *,
    route_traffic: bool = True,
) -> OnlineEndpoint:
    """Create or update ``endpoint``, then ``deployment`` behind it, each waited for until AzureML has provisioned
    it; with ``route_traffic``, then send all the endpoint's traffic to the deployment (else the traffic stays as
    it was, e.g. to try a green deployment first). The endpoint as AzureML returns it. ``ResumeNerError`` when
    AzureML refuses either or the deployment does not start, with the command that shows its logs."""
    from azure.core.exceptions import AzureError

    where = f"AzureML online deployment {deployment.name} of endpoint {endpoint.name}"
    try:
        ml_client.online_endpoints.begin_create_or_update(endpoint).result()
        log.info("endpoint %s provisioned; creating deployment %s", endpoint.name, deployment.name)
        ml_client.online_deployments.begin_create_or_update(deployment).result()
        current = ml_client.online_endpoints.get(endpoint.name)
        if route_traffic:
            current.traffic = {**{name: 0 for name in current.traffic or {}}, deployment.name: 100}
            current = ml_client.online_endpoints.begin_create_or_update(current).result()
    except AzureError as exc:
        raise ResumeNerError(
            f"{where} failed: {' '.join(str(exc).split())[:MAX_ERROR_CHARS]}; its logs: az ml online-deployment "
            f"get-logs --name {deployment.name} --endpoint-name {endpoint.name}"
        ) from exc
    return current
