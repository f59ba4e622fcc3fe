"""A real uvicorn registry: racing joins, racing leader claims, and the client's errors/retries."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bootstrap.server import RegistryServer
from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

MODEL = "mlp:1x8x8:10"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    srv = RegistryServer(tmp_path_factory.mktemp("reg") / "r.db")
    srv.start()
    yield srv
    srv.stop()


def test_client_raises_registry_error_on_4xx_without_retry(tmp_path: Path) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(404, json={"status_code": 404, "detail": "unknown node 'x'"})

    client = RegistryClient("http://registry", transport=httpx.MockTransport(handler), retries=3)
    with pytest.raises(RegistryError) as info:
        client.node("x")
    assert (info.value.status, info.value.detail, calls) == (404, "unknown node 'x'", 1)


def test_client_retries_5xx_then_succeeds() -> None:
    answers = iter([503, 500, 200])
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        code = next(answers)
        ok = {"status": "ok", "schema_version": 1, "time": 1.0}
        return httpx.Response(code, json=ok if code == 200 else {"detail": "busy"})

    client = RegistryClient(
        "http://registry",
        transport=httpx.MockTransport(handler),
        retries=3,
        backoff=0.1,
        sleep=sleeps.append,
    )
    assert client.health().status == "ok"
    assert len(sleeps) == 2 and 0.1 <= sleeps[0] <= 0.15 and 0.2 <= sleeps[1] <= 0.3


def test_client_unavailable_after_retries_on_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    client = RegistryClient(f"http://127.0.0.1:{port}", retries=2, timeout=1.0, sleep=sleeps.append)
    with pytest.raises(RegistryUnavailable, match="3 attempts"):
        client.groups()
    assert len(sleeps) == 2


def test_client_against_real_server(server: RegistryServer) -> None:
    assert server.url is not None
    with RegistryClient(server.url) as c:
        c.register("cli-a", "A", "127.0.0.1:6001", model=MODEL, data={"n": 3})
        g = c.create_group("cli", "cli-a", "127.0.0.1:6101", MODEL, reason="no group fits")
        c.report_performance(g.id, "cli-a", 1, accuracy=0.9, loss=0.2, round=1, examples=10)
        assert c.group(g.id).metrics.accuracy == 0.9
        assert "127.0.0.1:6001" in c.peers(limit=1000)
        assert c.heartbeat("cli-a", round=2).metrics.round == 2
        snap = c.network(events=5)
        assert g.id in [x.id for x in snap.groups]
        assert c.leave_group("cli-a").group is None
        assert c.deregister("cli-a").status == "gone"
        with pytest.raises(RegistryError) as info:
            c.join_group("cli-a", g.id)
        assert info.value.status in (404, 409)


def test_an_embedded_registry_leaves_the_host_logging_alone(tmp_path: Path) -> None:
    """Litestar's and uvicorn's logging set-up would close every handler of the host process."""
    handler = logging.FileHandler(tmp_path / "host.log", mode="w")  # closed stays closed
    host_log = logging.getLogger("host-program")
    host_log.addHandler(handler)
    host_log.setLevel(logging.INFO)
    registry = RegistryServer(tmp_path / "r.db")
    try:
        registry.start()
        host_log.info("still logging")
    finally:
        registry.stop()
        host_log.removeHandler(handler)
        handler.close()
    assert "still logging" in (tmp_path / "host.log").read_text()
