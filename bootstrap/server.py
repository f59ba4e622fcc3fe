"""Serving the registry with uvicorn: connection limits, the listening socket, and
:class:`RegistryServer` (uvicorn on a background thread, for tests, the demo, experiments).

``mycelium bootstrap`` and :class:`RegistryServer` both build their uvicorn configuration with
:func:`uvicorn_config`, so the limits below hold wherever the registry runs.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h11
import uvicorn
from litestar import Litestar
from uvicorn.protocols.http.h11_impl import H11Protocol

from bootstrap.app import create_app
from bootstrap.store import LivenessConfig

__all__ = [
    "CLUSTER_ADMIN_TOKEN",
    "LivenessConfig",
    "RegistryServer",
    "ServerLimits",
    "bound_port",
    "cluster_registry",
    "listen_socket",
    "url_host",
    "uvicorn_config",
]


@dataclass(frozen=True)
class ServerLimits:
    """How long a client may take and how many may be served at once.

    Parameters
    ----------
    header_timeout : float
        Seconds a connection may take to send a request's headers, counted from its opening
        (or, on a kept-alive connection, from the first byte of the next request) (default: 10).
        A connection that sends nothing is closed after this too.
    body_timeout : float
        Seconds a request may take to send its body once its headers are in (default: 10;
        bodies are at most 64 KiB).
    keep_alive : float
        Seconds an idle kept-alive connection stays open between requests (default: 5).
    max_concurrency : int
        Open connections plus requests in progress beyond which uvicorn answers 503 (its
        ``limit_concurrency``; default: 1000). Idle connections count too, which is why the
        timeouts above keep them short-lived.
    """

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keep_alive: float = 5.0
    max_concurrency: int = 1000

    def __post_init__(self) -> None:
        if min(self.header_timeout, self.body_timeout, self.keep_alive) <= 0:
            raise ValueError("timeouts must be > 0")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading a request's headers and its body.

    uvicorn (0.49) only times out idle kept-alive connections: a connection that never finishes
    its headers, or a request whose body stalls, is held forever. One timer per connection
    closes it when the phase it is in (headers, body) runs past its limit.
    """

    def __init__(self, *args: Any, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._phase: str | None = None  # "headers" or "body" while a deadline runs
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, phase: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self._limits.header_timeout
            if phase == "body":
                seconds = self._limits.body_timeout
            self._deadline = self.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        self.logger.debug("closing a connection: request %s not received in time", self._phase)
        if not self.transport.is_closing():
            self.transport.close()

    def _follow(self) -> None:
        """Move the deadline along with what h11 has received of the current request."""
        state = self.conn.their_state
        wanted = "body" if state is h11.SEND_BODY else None
        if state is h11.IDLE and self._phase == "headers":
            wanted = "headers"  # still waiting for the end of the headers
        if wanted != self._phase:
            self._arm(wanted)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers")

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._arm("headers")  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)


def uvicorn_config(
    app: Litestar,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: ServerLimits | None = None,
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of a registry: ``limits`` applied, lifespan on, no access log.

    ``options`` go to ``uvicorn.Config`` (e.g. ``log_level``, ``log_config``).
    """
    limits = limits or ServerLimits()
    settings: dict[str, Any] = {"log_level": "warning", "access_log": False, **options}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        http=partial(TimedH11Protocol, limits=limits),  # type: ignore[arg-type]
        timeout_keep_alive=limits.keep_alive,  # type: ignore[arg-type]
        limit_concurrency=limits.max_concurrency,
        **settings,
    )


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), as uvicorn would bind it.

    Binding before serving turns a busy port or a foreign address into a plain ``OSError``
    here, instead of an error logged by uvicorn followed by ``SystemExit``.

    Raises
    ------
    OSError
        If the address cannot be bound (in use, not on this machine, unknown host name).
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


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
        The admission token (``create_app``); with it, requests need credentials and the
        registry is the network's CA (default: None, open).
    liveness : LivenessConfig, optional
        Expiry timings (default: ``LivenessConfig()``).
    limits : ServerLimits, optional
        Connection timeouts and concurrency (default: ``ServerLimits()``).
    clock : callable
        Wall-clock seconds (default: ``time.time``); tests inject a fake one.
    expiry : bool
        Run the expiry thread (default: True; with a fake clock, call
        ``server.app.state["store"].sweep()`` instead).
    admin_token, observer_token, ca_dir
        As ``create_app`` takes them (defaults: None).
    """

    def __init__(
        self,
        db_path: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        liveness: LivenessConfig | None = None,
        limits: ServerLimits | None = None,
        clock: Callable[[], float] = time.time,
        expiry: bool = True,
        *,
        admin_token: str | None = None,
        observer_token: str | None = None,
        ca_dir: str | Path | None = None,
    ) -> None:
        self.app: Litestar = create_app(
            db_path,
            token=token,
            liveness=liveness,
            clock=clock,
            expiry=expiry,
            admin_token=admin_token,
            observer_token=observer_token,
            ca_dir=ca_dir,
        )
        # log_config=None: uvicorn's dictConfig would close the log handlers of the host process.
        config = uvicorn_config(self.app, host, port, limits, log_config=None)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._host = host
        self._port = port
        self.url: str | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; returns the base URL (e.g. ``http://127.0.0.1:40123``).

        Raises
        ------
        OSError
            If the address cannot be bound (e.g. the port is in use).
        """
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = listen_socket(self._host, self._port)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="registry", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                sock.close()
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


#: The operator token of registries made by :func:`cluster_registry` when they have a token.
CLUSTER_ADMIN_TOKEN = "cluster-operator"


def cluster_registry(
    db_path: Path, token: str | None, suspect_after: float, dead_after: float
) -> RegistryServer:
    """A registry for a cluster of nodes in this process (``testing.LocalCluster``'s factory);
    with a token, its operator token is :data:`CLUSTER_ADMIN_TOKEN`."""
    return RegistryServer(
        db_path,
        token=token,
        liveness=LivenessConfig(suspect_after=suspect_after, dead_after=dead_after),
        admin_token=CLUSTER_ADMIN_TOKEN if token else None,
    )
