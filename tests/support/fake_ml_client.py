"""A FAKE ``azure.ai.ml.MLClient``, for tests: only the ``ml_client.jobs``, ``online_endpoints`` and
``online_deployments`` calls ``resume_ner.azureml.submit`` makes.

It is not AzureML and reaches nothing: it keeps the submitted job (a real ``azure.ai.ml`` entity) in memory and
plays the service's part on it. ``create_or_update`` takes a command node as the job it stands for, as the SDK
does, names the job and sets it ``NotStarted``; each ``get``
moves it to the next status of ``statuses`` (the last one repeats) and, on ``Completed``, sets ``properties``
(e.g. a sweep's ``best_child_run_id`` and ``score``); ``get_failures`` first reads fail as a network error does.
``begin_cancel`` records the name and sets ``CancelRequested``. ``stream`` raises the job's ``error`` when it
failed, as the SDK raises the error AzureML recorded. ``list(parent_job_name=...)`` returns child jobs with
``children`` statuses; ``download(..., output_name=...)`` writes ``files[output_name]`` (file name -> text)
where the SDK puts a named output: ``<download_path>/named-outputs/<output_name>/``.
``online_endpoints`` and ``online_deployments`` keep what ``begin_create_or_update`` is given, by name, and return it
from the poller's ``result()`` and from ``get``; a deployment's ``result()`` raises ``deployment_failure`` as the SDK
raises a failed provisioning.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from azure.ai.ml.entities import Command
from azure.core.exceptions import HttpResponseError, ServiceRequestError


def finish(job: Any, *, name: str, status: str, properties: dict[str, Any] | None = None) -> Any:
    """``job`` as the service returns it: named, in ``status``, with the service's ``properties``."""
    job.name = name
    job._status = status  # read-only for users: the service sets it
    job.properties.update(properties or {})
    return job


class FakeJobs:
    """``FakeMLClient.jobs``."""

    def __init__(self, statuses: list[str], *, error: str = "", properties: dict[str, Any] | None = None,
                 children: tuple[str, ...] = (), files: dict[str, dict[str, str]] | None = None,
                 get_failures: int = 0) -> None:
        self.statuses = list(statuses)
        self.error = error
        self.properties = properties or {}
        self.children = children
        self.files = files or {}
        self.get_failures = get_failures
        self.job: Any = None
        self.submitted: list[Any] = []
        self.cancelled: list[str] = []
        self.gets = 0

    def _known(self, name: str) -> Any:
        if self.job is None or name != self.job.name:
            raise KeyError(f"fake AzureML has no job {name!r}")
        return self.job

    def create_or_update(self, job: Any) -> Any:
        if isinstance(job, Command):  # load_job reads a command job YAML as a command node
            job = job._to_job()
        self.submitted.append(job)
        self.job = finish(job, name=f"fake-job-{len(self.submitted)}", status="NotStarted")
        return job

    def get(self, name: str) -> Any:
        job = self._known(name)
        if self.get_failures:
            self.get_failures -= 1
            raise ServiceRequestError("connection reset by peer")
        self.gets += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return finish(job, name=name, status=status, properties=self.properties if status == "Completed" else None)

    def begin_cancel(self, name: str) -> Any:
        finish(self._known(name), name=name, status="CancelRequested")
        self.cancelled.append(name)
        return SimpleNamespace(result=lambda: None)

    def stream(self, name: str) -> None:
        print("log line that the caller must not see")
        if self._known(name).status == "Failed":
            raise RuntimeError(f'Exception : \n {{\n    "error": {{\n        "message": "{self.error}"\n    }}\n}} ')

    def list(self, *, parent_job_name: str) -> list[Any]:
        return [SimpleNamespace(name=f"{parent_job_name}_{i}", status=s) for i, s in enumerate(self.children)]

    def download(self, name: str, *, download_path: str, output_name: str) -> None:
        folder = Path(download_path) / "named-outputs" / output_name
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, text in self.files.get(output_name, {}).items():
            (folder / file_name).write_text(text, encoding="utf-8")


class FakeOnlineOperations:
    """``FakeMLClient.online_endpoints`` and ``.online_deployments``."""

    def __init__(self, failure: str = "") -> None:
        self.failure = failure
        self.created: list[Any] = []

    def begin_create_or_update(self, entity: Any) -> Any:
        self.created.append(entity)

        def result() -> Any:
            if self.failure:
                raise HttpResponseError(self.failure)
            return entity

        return SimpleNamespace(result=result)

    def get(self, name: str) -> Any:
        found = [entity for entity in self.created if entity.name == name]
        if not found:
            raise KeyError(f"fake AzureML has no {name!r}")
        return found[-1]


class FakeMLClient:
    """A FAKE ``MLClient``: ``jobs`` is a ``FakeJobs``, ``online_endpoints`` and ``online_deployments`` are
    ``FakeOnlineOperations`` (see the module docstring); nothing else exists."""

    def __init__(self, statuses: list[str], *, deployment_failure: str = "", **jobs: Any) -> None:
        self.jobs = FakeJobs(statuses, **jobs)
        self.online_endpoints = FakeOnlineOperations()
        self.online_deployments = FakeOnlineOperations(deployment_failure)
