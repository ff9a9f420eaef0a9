"""``mlflow models serve`` of a model on this machine: the command (``resume-ner serve`` runs it in the foreground)
and ``LocalModelServer``, which runs it in the background until ``stop`` (notebooks, tests, benchmarks).

The server is MLflow's own scoring server (uvicorn): ``/ping`` and ``/health`` answer 200 once the model is
loaded, ``/invocations`` takes ``{"dataframe_records": [{"text": ...}, ...]}`` (or ``dataframe_split``, or
``{"inputs": {"text": [...]}}``) and answers ``{"predictions": [{"entities": [...]}, ...]}``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from resume_ner.errors import ResumeNerError

START_TIMEOUT_S = 180.0
# Server processes, each with its own model and torch on every core: while one runs a forward pass the other takes
# requests in, and a lone request still gets every core. On 2 cores (docs/benchmarks.md, Serving speed): 6.9 resumes/s
# at concurrency 8 against 5.9 with one worker, and about the same p95 for a lone request; memory is one model per
# worker.
SERVER_WORKERS = 2


def serve_command(
    model_uri: str, *, host: str = "127.0.0.1", port: int = 5001, workers: int = SERVER_WORKERS
) -> list[str]:
    """The ``mlflow models serve`` command of ``model_uri`` in this Python environment (``--env-manager local``:
    the environment that has ``resume-ner`` installed)."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve",
        "--model-uri", model_uri,
        "--env-manager", "local",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip


def serve_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (else this process's environment) with this Python's ``bin`` first on ``PATH``: MLflow starts
    ``uvicorn`` by name, which must be this environment's."""
    environment = dict(os.environ if base is None else base)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    environment.setdefault("HF_HUB_OFFLINE", "1")
    return environment


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(url: str) -> bool:
    """Whether the scoring server at ``url`` answers ``/ping`` with 200 now (its model is loaded)."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalModelServer:
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1 in the background, its output in ``log_path``.

    ``start`` returns once ``/ping`` answers 200 (``ResumeNerError`` with the end of the log when the server exits
    or is not up within ``START_TIMEOUT_S``); ``stop`` ends its process group by the PID it started. Use it as a
    context manager to stop it whatever happens.
    """

    def __init__(
        self,
        model_uri: str,
        log_path: str | Path,
        *,
        port: int | None = None,
        workers: int = SERVER_WORKERS,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.model_uri = model_uri
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.workers = workers
        self.environment = serve_environment(environment)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalModelServer:
        """Start the server and wait until it answers ``/ping``."""
        command = serve_command(self.model_uri, port=self.port, workers=self.workers)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ResumeNerError(
                    f"mlflow models serve of {self.model_uri} exited with status {self.process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            if self.ping():
                return self
            time.sleep(0.5)
        self.stop()
        raise ResumeNerError(
            f"mlflow models serve of {self.model_uri} not up after {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def ping(self) -> bool:
        """Whether ``/ping`` answers 200 now."""
        return ping(self.url)

    def log_tail(self, characters: int = 3000) -> str:
        """The end of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return "<no log>"

    def pids(self) -> list[int]:
        """The PIDs of the server's process group (the CLI, uvicorn and its workers)."""
        if self.process is None:
            return []
        group = self.process.pid
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == group:
                        found.append(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    continue
        return found

    def rss_mib(self) -> float:
        """The resident memory of the server's processes together, in MiB (Linux ``/proc``)."""
        total_kib = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        return total_kib / 1024

    def stop(self) -> None:
        """End the server's process group (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(process.pid, signal.SIGKILL)  # workers left in the group when the CLI exited first
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
