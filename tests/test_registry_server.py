"""A real uvicorn registry: racing joins, racing leader claims, and the client's errors/retries."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bootstrap.server import RegistryServer
from mycelium_p2p.registry_api import GroupOut
from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable

MODEL = "mlp:1x8x8:10"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    srv = RegistryServer(tmp_path_factory.mktemp("reg") / "r.db")
    srv.start()
    yield srv
    srv.stop()


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once on threads; return each result or exception."""
    results: list[Any] = [None] * len(calls)
    gate = threading.Barrier(len(calls))

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.slow
def test_concurrent_joins_never_exceed_capacity(server: RegistryServer) -> None:
    assert server.url is not None
    clients = [RegistryClient(server.url) for _ in range(12)]
    try:
        for i, c in enumerate(clients):
            c.register(f"r{i}", f"r{i}", f"127.0.0.1:{9000 + i}", model=MODEL)
        clients[0].create_group("race", "r0", "127.0.0.1:1", MODEL, capacity=4, id="g-race")
        calls = [
            (lambda c=c, i=i: c.join_group(f"r{i}", "g-race")) for i, c in enumerate(clients[1:], 1)
        ]
        results = race(calls)
        won = [r for r in results if isinstance(r, GroupOut)]
        lost = [r for r in results if isinstance(r, RegistryError)]
        assert len(won) == 3 and len(lost) == 8, results
        assert all(e.status == 409 and "full" in e.detail for e in lost)
        members = clients[0].group("g-race").members
        assert len(members) == 4
        in_group = [n.id for n in clients[0].nodes() if n.group == "g-race"]
        assert sorted(in_group) == sorted(members)
    finally:
        for c in clients:
            c.close()


@pytest.mark.slow
def test_two_claims_for_same_term_exactly_one_wins(server: RegistryServer) -> None:
    assert server.url is not None
    with RegistryClient(server.url) as a, RegistryClient(server.url) as b:
        for n in ("l0", "l1", "l2"):
            a.register(n, n, "127.0.0.1:5000", model=MODEL)
        a.create_group("lead", "l0", "127.0.0.1:1", MODEL, id="g-lead")
        a.join_group("l1", "g-lead")
        a.join_group("l2", "g-lead")
        for term in (2, 3, 4, 5):
            results = race(
                [
                    lambda t=term: a.claim_leadership("g-lead", "l1", t, "127.0.0.1:11"),
                    lambda t=term: b.claim_leadership("g-lead", "l2", t, "127.0.0.1:12"),
                ]
            )
            wins = [r for r in results if isinstance(r, GroupOut)]
            losses = [r for r in results if isinstance(r, RegistryError)]
            assert len(wins) == 1 and len(losses) == 1, results
            assert losses[0].status == 409
            group = a.group("g-lead")
            assert group.term == term and group.leader == wins[0].leader


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
