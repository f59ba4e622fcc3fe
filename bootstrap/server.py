"""Run the registry with uvicorn on a background thread (tests, the demo, experiments)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn
from litestar import Litestar

from bootstrap.app import create_app
from bootstrap.store import LivenessConfig

__all__ = ["LivenessConfig", "RegistryServer", "bound_port", "url_host"]


def bound_port(server: uvicorn.Server) -> int:
    """The TCP port a started uvicorn server listens on (useful with ``port=0``)."""
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("uvicorn server has no listening socket")


def url_host(host: str) -> str:
    """A host usable in a URL: the wildcard address becomes loopback, IPv6 gets brackets."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class RegistryServer:
    """A registry served by uvicorn on a background thread.

    Parameters
    ----------
    db_path : str or Path
        SQLite file.
    host : str
        Interface to bind (default: ``"127.0.0.1"``).
    port : int
        TCP port; 0 picks a free one (default: 0).
    token : str, optional
        Bearer token required for writes (default: None, open).
    liveness : LivenessConfig, optional
        Expiry timings (default: ``LivenessConfig()``).
    """

    def __init__(
        self,
        db_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        liveness: LivenessConfig | None = None,
    ) -> None:
        self.app: Litestar = create_app(db_path, token=token, liveness=liveness)
        # log_config=None: uvicorn's dictConfig would close the log handlers of the host process.
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            log_config=None,
            lifespan="on",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._host = host
        self.url: str | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; returns the base URL (e.g. ``http://127.0.0.1:40123``)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._server.run, name="registry", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("registry server failed to start (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("registry server did not start in time")
            time.sleep(0.01)
        self.url = f"http://{url_host(self._host)}:{bound_port(self._server)}"
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread (runs the app's shutdown)."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
