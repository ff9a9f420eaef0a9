"""A real ``mlflow server`` on 127.0.0.1 for tests: sqlite backend and proxied artifacts in a folder.

``MlflowServer(root).start()`` serves on a free port; ``stop()`` ends it (SIGTERM, or the signal given) and
``start()`` again serves the same store on the same port, as a restarted server would.
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

import pytest

SERVER_START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """An ``mlflow server`` subprocess with a sqlite backend and proxied artifacts under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = Path(sys.executable).parent / "mlflow"
        if not executable.exists():
            pytest.skip(f"no mlflow executable beside {sys.executable}")
        command = [
            str(executable),
            "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{(self.root / 'mlflow.db').as_posix()}",
            # Artifacts are proxied: clients upload over HTTP (mlflow-artifacts:/), the server writes here.
            "--serve-artifacts",
            "--artifacts-destination", (self.root / "artifacts").as_uri(),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with open(self.log_path, "ab") as log:  # a restart appends
            self.process = subprocess.Popen(
                command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_healthy()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "<no log>"

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server not healthy after {SERVER_START_TIMEOUT_S:.0f}s:\n{self._log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the server's process group (``sig``, then SIGKILL after 10 s); safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        # Workers left behind in the group (the main process may exit first) are killed too.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
