"""A FAKE Kubeflow Pipelines API server, for tests: only the v2beta1 REST endpoints ``resume_ner.kfp.remote`` calls.

It is not KFP: it runs nothing and checks little. It answers over HTTP on 127.0.0.1 (a free port, a background
thread) with JSON shaped like the real v2beta1 API, so ``kfp.Client`` and ``kfp_server_api`` parse it, keeps
experiments, pipelines, versions, runs and recurring runs in memory, and records every request (method,
path, query, headers, JSON or multipart body) for tests to assert on. Endpoints, all under ``/apis/v2beta1``:

* ``GET healthz`` (single-user);
* ``GET experiments`` (filter ``display_name`` EQUALS, ``namespace``), ``POST experiments``,
  ``GET experiments/{id}``;
* ``GET pipelines`` (filter ``display_name`` EQUALS), ``GET pipelines/{id}/versions``,
  ``POST pipelines/upload`` (multipart ``uploadfile``; query ``name``, ``description``) and
  ``POST pipelines/upload_version`` (multipart ``uploadfile``; query ``pipelineid``, ``name``);
* ``POST runs``, ``GET runs/{id}``: a run is PENDING when created and reads as ``run_final_state`` (with
  ``run_error``) from then on, as if it had ended by the first poll;
* ``POST recurringruns``.

The same paths are served under the Kubernetes API server's service proxy prefix
(``/api/v1/namespaces/<ns>/services/ml-pipeline:http/proxy``), which ``kfp.Client`` calls with a kube context.
With ``require_token``, every request without ``Authorization: Bearer <token>`` gets 401. Namespaces are kept
as sent (a multi-user server's way; a single-user one ignores them). Anything else gets 404.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from support.local_http_server import LocalHttpServer

API = "/apis/v2beta1"
PROXY_PREFIX = re.compile(r"^/api/v1/namespaces/[^/]+/services/ml-pipeline:http/proxy/*")
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6}  # HTTP status -> the google.rpc code KFP puts in errors
FINAL_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}

Answer = tuple[int, dict[str, Any]]


@dataclass
class Request:
    """One request as the fake received it; ``route`` is ``path`` without the kube service-proxy prefix."""

    method: str
    path: str
    route: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    files: dict[str, bytes] = field(default_factory=dict)


class FakeKfpServer(LocalHttpServer):
    """The fake KFP API (see the module doc); use as a context manager: ``with FakeKfpServer() as server:``."""

    def __init__(self, *, require_token: str | None = None) -> None:
        self.require_token = require_token
        self.run_final_state = "SUCCEEDED"
        self.run_error: str | None = None
        self.requests: list[Request] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Answer]]] = [
            (method, re.compile(f"{API}/{pattern}"), handler)
            for method, pattern, handler in [
                ("GET", "healthz", self._healthz),
                ("GET", "experiments", self._list_experiments),
                ("POST", "experiments", self._create_experiment),
                ("GET", "experiments/(?P<id>[^/:]+)", self._get_experiment),
                ("GET", "pipelines", self._list_pipelines),
                ("GET", "pipelines/(?P<id>[^/:]+)/versions", self._list_versions),
                ("POST", "pipelines/upload", self._upload_pipeline),
                ("POST", "pipelines/upload_version", self._upload_version),
                ("POST", "runs", self._create_run),
                ("GET", "runs/(?P<id>[^/:]+)", self._get_run),
                ("POST", "recurringruns", self._create_recurring_run),
            ]
        ]
        super().__init__(_Handler, "fake-kfp-server")

    def requests_to(self, method: str, route: str) -> list[Request]:
        """The recorded requests of ``method`` to ``route`` (e.g. ``"/apis/v2beta1/runs"``)."""
        return [r for r in self.requests if r.method == method and r.route == route]

    def answer(self, request: Request) -> Answer:
        """Record ``request`` and answer it: (HTTP status, JSON body)."""
        with self._lock:
            self.requests.append(request)
            if self.require_token is not None:
                if request.headers.get("authorization") != f"Bearer {self.require_token}":
                    return _error(401, "Unauthenticated: missing or invalid bearer token")
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(request.route)
                if match and method == request.method:
                    try:
                        return handler(request, **match.groupdict())
                    except ValueError as error:  # a filter or body the fake does not understand
                        return _error(400, f"fake KFP server: {error}")
            return _error(404, f"fake KFP server: no endpoint {request.method} {request.route}")

    def _healthz(self, request: Request) -> Answer:
        return 200, {"multi_user": False, "pipeline_store": "database"}

    def _list_experiments(self, request: Request) -> Answer:
        namespace = request.query.get("namespace")
        found = [e for e in _filtered(self.experiments.values(), request) if namespace in ("", None, e["namespace"])]
        return 200, _page("experiments", found, request)

    def _create_experiment(self, request: Request) -> Answer:
        body = request.json or {}
        if not body.get("display_name"):
            return _error(400, "experiment display_name is required")
        experiment = {"experiment_id": _new_id(), "display_name": body["display_name"], "namespace": body.get(
            "namespace", ""), "description": body.get("description", ""), "created_at": _now(),
            "storage_state": "AVAILABLE"}
        self.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment

    def _get_experiment(self, request: Request, id: str) -> Answer:
        return (200, self.experiments[id]) if id in self.experiments else _error(404, f"experiment {id} not found")

    def _list_pipelines(self, request: Request) -> Answer:
        return 200, _page("pipelines", _filtered(self.pipelines.values(), request), request)

    def _list_versions(self, request: Request, id: str) -> Answer:
        if id not in self.pipelines:
            return _error(404, f"pipeline {id} not found")
        found = [v for v in self.versions.values() if v["pipeline_id"] == id]
        if request.query.get("sort_by", "").endswith(" desc"):
            found.reverse()
        return 200, _page("pipeline_versions", found, request)

    def _upload_pipeline(self, request: Request) -> Answer:
        spec = _uploaded_spec(request)
        if spec is None:
            return _error(400, "uploadfile is not a pipeline spec YAML")
        name = request.query.get("name") or spec["pipelineInfo"]["name"]
        if any(p["display_name"] == name for p in self.pipelines.values()):
            return _error(409, f"AlreadyExists: a pipeline named {name!r} exists")
        pipeline = {"pipeline_id": _new_id(), "display_name": name, "name": name, "description": request.query.get(
            "description", ""), "namespace": request.query.get("namespace", ""), "created_at": _now()}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self._add_version(pipeline["pipeline_id"], name, request.query.get("description", ""), spec)
        return 200, pipeline

    def _upload_version(self, request: Request) -> Answer:
        spec = _uploaded_spec(request)
        pipeline_id, name = request.query.get("pipelineid", ""), request.query.get("name", "")
        if spec is None or not name:
            return _error(400, "upload_version needs a pipeline spec YAML in uploadfile and a name")
        if pipeline_id not in self.pipelines:
            return _error(404, f"pipeline {pipeline_id!r} not found")
        if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions.values()):
            return _error(409, f"AlreadyExists: pipeline {pipeline_id} has a version named {name!r}")
        return 200, self._add_version(pipeline_id, name, request.query.get("description", ""), spec)

    def _add_version(self, pipeline_id: str, name: str, description: str, spec: dict[str, Any]) -> dict[str, Any]:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": _new_id(), "display_name": name, "name": name,
                   "description": description, "created_at": _now(), "pipeline_spec": spec}
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _create_run(self, request: Request) -> Answer:
        body = request.json or {}
        if body.get("experiment_id") not in self.experiments:
            return _error(404, f"experiment {body.get('experiment_id')!r} not found")
        if not body.get("pipeline_spec") and not body.get("pipeline_version_reference"):
            return _error(400, "a run needs a pipeline_spec or a pipeline_version_reference")
        run = {**body, "run_id": _new_id(), "state": "PENDING", "created_at": _now(), "storage_state": "AVAILABLE"}
        self.runs[run["run_id"]] = run
        return 200, run

    def _get_run(self, request: Request, id: str) -> Answer:
        if id not in self.runs:
            return _error(404, f"run {id} not found")
        run = self.runs[id]
        if run["state"] not in FINAL_STATES:
            run["state"] = self.run_final_state
            if self.run_error is not None:
                run["error"] = {"code": 2, "message": self.run_error, "details": []}
        return 200, run

    def _create_recurring_run(self, request: Request) -> Answer:
        body = request.json or {}
        if body.get("experiment_id") not in self.experiments:
            return _error(404, f"experiment {body.get('experiment_id')!r} not found")
        if not (body.get("trigger") or {}).get("cron_schedule", {}).get("cron"):
            return _error(400, "the fake supports cron triggers only")
        job = {**body, "recurring_run_id": _new_id(), "status": "ENABLED", "created_at": _now(),
               "max_concurrency": str(body.get("max_concurrency", 1))}  # int64: a string in proto3 JSON
        self.recurring_runs[job["recurring_run_id"]] = job
        return 200, job


class _Handler(BaseHTTPRequestHandler):
    """Parses a request into a ``Request``, lets the fake answer it, writes the JSON answer."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``FakeKfpServer.requests`` instead."""

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = self.headers.get("Content-Type", "")
        request = Request(
            method=method,
            path=url.path,
            route=PROXY_PREFIX.sub("/", url.path, count=1),
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={key.lower(): value for key, value in self.headers.items()},
        )
        if content_type.startswith("multipart/form-data"):
            request.files = _multipart_files(content_type, body)
        elif body:
            request.json = json.loads(body)
        status, payload = self.server.fake.answer(request)  # type: ignore[attr-defined]
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _multipart_files(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by field name."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


def _uploaded_spec(request: Request) -> dict[str, Any] | None:
    try:
        spec = next(yaml.safe_load_all(request.files.get("uploadfile", b"")), None)
    except yaml.YAMLError:
        return None
    return spec if isinstance(spec, dict) and "pipelineInfo" in spec and "root" in spec else None


def _filtered(items: Any, request: Request) -> list[dict[str, Any]]:
    """``items`` that pass the request's ``filter`` (display_name EQUALS predicates only, as kfp.Client sends)."""
    found = list(items)
    for predicate in json.loads(request.query.get("filter") or "{}").get("predicates", []):
        if predicate.get("operation") not in (1, "EQUALS") or predicate.get("key") != "display_name":
            raise ValueError(f"unsupported filter predicate {predicate}")
        value = predicate.get("stringValue", predicate.get("string_value"))
        found = [item for item in found if item["display_name"] == value]
    return found


def _page(key: str, items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    size = int(request.query.get("page_size") or 0) or len(items)
    return {key: items[:size], "total_size": len(items)} if items else {"total_size": 0}


def _error(status: int, message: str) -> Answer:
    return status, {"error": message, "code": GRPC_CODES.get(status, 2), "message": message, "details": []}


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
