"""Fixtures of integration tests: a real ``mlflow server`` on 127.0.0.1.

``mlflow_server`` yields the server's URI (``http://127.0.0.1:PORT``); ``stop_mlflow_server`` stops that same
server mid-test (to check what clients do while it is down). The server runs in its own process group,
which is killed when the test ends, whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.mlflow_test_server import MlflowServer


@pytest.fixture
def _mlflow_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(_mlflow_server_process: MlflowServer) -> str:
    """URI of a fresh MLflow tracking server (sqlite backend, artifacts proxied over HTTP)."""
    return _mlflow_server_process.uri


@pytest.fixture
def stop_mlflow_server(_mlflow_server_process: MlflowServer) -> Callable[[], None]:
    """Stops the server of ``mlflow_server`` now (it stays down for the rest of the test)."""
    return _mlflow_server_process.stop
