"""The base of the tests' HTTP fakes (FakeKfpServer, FakeKubernetesApi): a threaded server on 127.0.0.1."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalHttpServer:
    """Serves ``handler`` on 127.0.0.1 (a free port) in a background thread while used as a context manager;
    the handler reaches this object as ``self.server.fake``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self._http.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name=name,
                                        daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
