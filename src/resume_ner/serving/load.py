"""A bounded load test of a served model: ``concurrency`` clients send ``requests`` requests in all to its
``/invocations`` (MLflow's scoring protocol), then stop; latency percentiles, throughput and errors."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from resume_ner.serving.schema import TEXT_COLUMN


@dataclass
class LoadReport:
    """What a load test measured (latencies in milliseconds, of the requests that succeeded)."""

    requests: int
    concurrency: int
    texts_per_request: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    requests_per_s: float
    texts_per_s: float
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for a console."""
        return (
            f"{self.requests} requests ({self.texts_per_request} text(s) each) at concurrency {self.concurrency}: "
            f"{self.errors} error(s), p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, max {self.max_ms:.0f} ms, "
            f"{self.requests_per_s:.1f} requests/s, {self.texts_per_s:.1f} texts/s in {self.seconds:.1f} s"
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` (nearest rank); 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def invocations_body(texts: Sequence[str]) -> bytes:
    """The JSON body of an ``/invocations`` request for ``texts``."""
    return json.dumps({"dataframe_records": [{TEXT_COLUMN: text} for text in texts]}).encode()


def post_invocations(url: str, body: bytes, timeout_s: float = 60.0) -> tuple[int, bytes]:
    """POST the JSON ``body`` to ``url``/invocations: the HTTP status and the answer's body (an error status is
    returned, not raised); a transport failure raises ``urllib.error.URLError`` / ``OSError``."""
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def run_load(
    url: str,
    texts: Sequence[str],
    *,
    concurrency: int = 8,
    requests: int = 400,
    texts_per_request: int = 1,
    timeout_s: float = 60.0,
) -> LoadReport:
    """Send ``requests`` requests of ``texts_per_request`` texts each (cycling through ``texts``) from
    ``concurrency`` threads to ``url``/invocations; a request fails on a non-200 answer or a transport error."""
    if not texts:
        raise ValueError("run_load needs at least one text")
    bodies = [
        invocations_body([texts[(i * texts_per_request + j) % len(texts)] for j in range(texts_per_request)])
        for i in range(requests)
    ]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                status, answer = post_invocations(url, bodies[index], timeout_s)
                ok, problem = status == 200, f"HTTP {status}: {answer[:200]!r}"
            except (urllib.error.URLError, OSError) as exc:
                ok, problem = False, f"{type(exc).__name__}: {exc}"
            elapsed_ms = (time.perf_counter() - started) * 1000
            with lock:
                if ok:
                    latencies.append(elapsed_ms)
                else:
                    failures.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"load-client-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return LoadReport(
        requests=requests,
        concurrency=concurrency,
        texts_per_request=texts_per_request,
        errors=len(failures),
        seconds=round(seconds, 3),
        p50_ms=round(percentile(latencies, 0.50), 1),
        p95_ms=round(percentile(latencies, 0.95), 1),
        max_ms=round(max(latencies, default=0.0), 1),
        requests_per_s=round(len(latencies) / seconds, 2),
        texts_per_s=round(len(latencies) * texts_per_request / seconds, 2),
        error_samples=failures[:5],
    )
