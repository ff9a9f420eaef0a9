"""A FAKE Kubernetes API server, for tests: only the few endpoints ``resume_ner.k8s.pytorchjob`` calls.

It is not Kubernetes and runs no Training Operator: it answers over HTTP on 127.0.0.1 (a free port, a background
thread) with JSON shaped like the real API, so ``kubernetes.client`` parses it, keeps PyTorchJobs in memory and
records every request (method, path, query, JSON body) for tests to assert on. Endpoints:

* ``POST /apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs``: stores the job (409 ``AlreadyExists`` when one of
  that name exists) and "starts" one pod per replica, named and labelled as the operator does
  (``<job>-<replica type>-<index>``; ``training.kubeflow.org/job-name``, ``training.kubeflow.org/replica-type`` in
  lower case);
* ``GET .../pytorchjobs/{name}``: each read moves the job one step: Created, Running, then ``outcome``:
  Succeeded, or Failed (``replicaStatuses: {failed_replica: {failed: 1}}`` and ``failure_message``), or Running
  for ever (``outcome = "Running"``);
* ``DELETE .../pytorchjobs/{name}``: forgets the job and its pods;
* ``GET /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...``: the job's pods matching the selector;
* ``GET /api/v1/namespaces/{ns}/pods/{pod}/log?tailLines=N``: the pod's log (``logs[pod]``, else 60 numbered
  lines, the failed pod's ending in a traceback), its last N lines, as text.

``deny_status`` (401 or 403) answers every request with that status; ``fail_next_gets`` answers that many job reads
with 503 first. Anything else gets 404. Errors are Kubernetes ``Status`` objects.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from support.local_http_server import LocalHttpServer

JOBS = "/apis/kubeflow.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs"
PODS = "/api/v1/namespaces/(?P<ns>[^/]+)/pods"
REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 503: "ServiceUnavailable"}

Answer = tuple[int, Any]


@dataclass
class Request:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any = None


class FakeKubernetesApi(LocalHttpServer):
    """The fake API server (see the module doc); use as a context manager: ``with FakeKubernetesApi() as api:``."""

    def __init__(self) -> None:
        self.outcome = "Succeeded"
        self.failed_replica = "Worker"
        self.failure_message: str | None = None
        self.deny_status: int | None = None
        self.fail_next_gets = 0
        self.logs: dict[str, str] = {}
        self.requests: list[Request] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: list[tuple[str, str]] = []
        self._steps: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._routes = [
            ("POST", re.compile(JOBS), self._create_job),
            ("GET", re.compile(JOBS + "/(?P<name>[^/]+)"), self._get_job),
            ("DELETE", re.compile(JOBS + "/(?P<name>[^/]+)"), self._delete_job),
            ("GET", re.compile(PODS), self._list_pods),
            ("GET", re.compile(PODS + "/(?P<pod>[^/]+)/log"), self._pod_log),
        ]
        super().__init__(_Handler, "fake-k8s-api")

    def requests_to(self, method: str, path: str) -> list[Request]:
        """The recorded requests of ``method`` to ``path``."""
        return [r for r in self.requests if r.method == method and r.path == path]

    def answer(self, request: Request) -> Answer:
        """Record ``request`` and answer it: (HTTP status, JSON body or log text)."""
        with self._lock:
            self.requests.append(request)
            if self.deny_status is not None:
                return _status(self.deny_status, "the fake denies every request (deny_status)")
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(request.path)
                if match and method == request.method:
                    return handler(request, **match.groupdict())
            return _status(404, f"fake Kubernetes API: no endpoint {request.method} {request.path}")

    def _create_job(self, request: Request, ns: str) -> Answer:
        job = request.json
        name = job["metadata"]["name"]
        if (ns, name) in self.jobs:
            return _status(409, f'pytorchjobs.kubeflow.org "{name}" already exists')
        job = {**job, "metadata": {**job["metadata"], "namespace": ns, "uid": str(uuid.uuid4()),
                                   "creationTimestamp": _now()}}
        self.jobs[(ns, name)] = job
        self._steps[(ns, name)] = 0
        return 201, job

    def _get_job(self, request: Request, ns: str, name: str) -> Answer:
        if self.fail_next_gets > 0:
            self.fail_next_gets -= 1
            return _status(503, "the fake is unavailable for a moment (fail_next_gets)")
        if (ns, name) not in self.jobs:
            return _status(404, f'pytorchjobs.kubeflow.org "{name}" not found')
        step = self._steps[(ns, name)] = min(self._steps[(ns, name)] + 1, 3)
        job = self.jobs[(ns, name)]
        job["status"] = self._status_at(job, step)
        return 200, job

    def _status_at(self, job: dict[str, Any], step: int) -> dict[str, Any]:
        """The job's status after ``step`` reads: 1 Created, 2 Running, 3 the outcome."""
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        replicas = {rtype: spec.get("replicas", 1) for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items()}
        conditions = [_condition("Created", f"PyTorchJob {ns}/{name} is created.")]
        statuses: dict[str, dict[str, int]] = {rtype: {} for rtype in replicas}
        outcome = self.outcome if step >= 3 else "Running"
        if step >= 2:
            conditions.append(_condition("Running", f"PyTorchJob {ns}/{name} is running.",
                                         "False" if outcome != "Running" else "True"))
            statuses = {rtype: {"active": count} for rtype, count in replicas.items()}
        if step >= 3 and outcome == "Succeeded":
            conditions.append(_condition("Succeeded", f"PyTorchJob {ns}/{name} successfully completed."))
            statuses = {rtype: {"succeeded": count} for rtype, count in replicas.items()}
        elif step >= 3 and outcome == "Failed":
            message = self.failure_message or (f"PyTorchJob {ns}/{name} is failed because 1 {self.failed_replica} "
                                               "replica(s) failed.")
            conditions.append(_condition("Failed", message))
            statuses[self.failed_replica] = {"failed": 1}
        return {"conditions": conditions, "replicaStatuses": statuses, "startTime": _now()}

    def _delete_job(self, request: Request, ns: str, name: str) -> Answer:
        if self.jobs.pop((ns, name), None) is None:
            return _status(404, f'pytorchjobs.kubeflow.org "{name}" not found')
        self.deleted.append((ns, name))
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": name, "group": "kubeflow.org", "kind": "pytorchjobs"}}

    def _pods(self, ns: str) -> list[dict[str, Any]]:
        """The pods the operator would have made for the namespace's jobs, with their phase at the job's step."""
        pods = []
        for (job_ns, name), job in self.jobs.items():
            if job_ns != ns:
                continue
            step = self._steps[(ns, name)]
            for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
                for index in range(spec.get("replicas", 1)):
                    phase = "Pending" if step < 2 else "Running"
                    if step >= 3 and self.outcome != "Running":
                        failed = self.outcome == "Failed" and rtype == self.failed_replica and index == 0
                        phase = "Failed" if failed else "Succeeded" if self.outcome == "Succeeded" else "Running"
                    pods.append({
                        "metadata": {"name": f"{name}-{rtype.lower()}-{index}", "namespace": ns, "labels": {
                            "training.kubeflow.org/job-name": name,
                            "training.kubeflow.org/replica-type": rtype.lower(),
                            "training.kubeflow.org/replica-index": str(index)}},
                        "spec": {"containers": [{"name": "pytorch", "image": "fake"}]},
                        "status": {"phase": phase},
                    })
        return pods

    def _list_pods(self, request: Request, ns: str) -> Answer:
        wanted = dict(item.split("=", 1) for item in request.query.get("labelSelector", "").split(",") if item)
        items = [pod for pod in self._pods(ns)
                 if all(pod["metadata"]["labels"].get(key) == value for key, value in wanted.items())]
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    def _pod_log(self, request: Request, ns: str, pod: str) -> Answer:
        found = next((p for p in self._pods(ns) if p["metadata"]["name"] == pod), None)
        if found is None:
            return _status(404, f'pods "{pod}" not found')
        lines = [f"{pod} log line {i:03d}" for i in range(60)]
        if found["status"]["phase"] == "Failed":
            lines += ["Traceback (most recent call last):", "RuntimeError: planted failure in the training step"]
        text = self.logs.get(pod, "\n".join(lines) + "\n")
        tail = int(request.query.get("tailLines", 0) or 0)
        return 200, "".join(text.splitlines(keepends=True)[-tail:]) if tail else text


class _Handler(BaseHTTPRequestHandler):
    """Parses a request into a ``Request``, lets the fake answer it, writes the answer (JSON, or text for logs)."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``FakeKubernetesApi.requests`` instead."""

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(method=method, path=url.path, query=dict(parse_qsl(url.query, keep_blank_values=True)),
                          json=json.loads(body) if body else None)
        status, payload = self.server.fake.answer(request)  # type: ignore[attr-defined]
        text = isinstance(payload, str)
        data = payload.encode() if text else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _condition(kind: str, message: str, status: str = "True") -> dict[str, str]:
    now = _now()
    return {"type": kind, "status": status, "reason": f"PyTorchJob{kind}", "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}


def _status(code: int, message: str) -> Answer:
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": REASONS.get(code, "InternalError"), "code": code}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
