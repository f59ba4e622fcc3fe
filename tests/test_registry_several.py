"""Several registries on one PostgreSQL database, and clients that know several registry URLs.

The client tests use a mock transport (pure logic of the failover). The others run real
registries on a fresh PostgreSQL database (``MYCELIUM_TEST_POSTGRES``): two in one process
(writes through one seen by the other, races across both, expiry seeing heartbeats that only the
other received), and two ``mycelium bootstrap`` processes of which one is SIGKILLed under live
traffic.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bootstrap.server import RegistryServer
from bootstrap.store import LivenessConfig
from mycelium_p2p.node_config import load_config
from mycelium_p2p.registry_api import GroupOut, HealthOut
from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable
from tests.helpers import RegistryProcess, race, wait_for, wait_until
from tests.registry_backends import fresh_postgres

MODEL = "mlp:1x8x8:10"


# ---- the client's failover (pure logic) ------------------------------------------------------


def test_client_moves_to_the_next_url_and_remembers_it() -> None:
    calls: list[str] = []
    down = {"a"}

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        calls.append(host)
        if host in down:
            raise httpx.ConnectError("refused", request=request)
        if host == "b" and request.url.path == "/busy":
            return httpx.Response(503, json={"detail": "busy"})
        if request.url.path == "/nodes/ghost":
            return httpx.Response(404, json={"detail": "unknown node 'ghost'"})
        return httpx.Response(
            200, json={"status": "ok", "schema_version": 1, "time": float(ord(host))}
        )

    sleeps: list[float] = []
    client = RegistryClient(
        "http://a:8000, http://b:8000/,http://c:8000",
        transport=httpx.MockTransport(handler),
        retries=1,
        sleep=sleeps.append,
    )
    assert client.urls == ("http://a:8000", "http://b:8000", "http://c:8000")
    assert client.health().time == ord("b")  # a refused the connection: b at once, no backoff
    assert client.health().time == ord("b")  # remembered: a is not tried again
    assert calls == ["a", "b", "b"] and sleeps == []
    with pytest.raises(RegistryError) as info:  # a 4xx is an answer: no failover
        client.node("ghost")
    assert info.value.status == 404 and calls[-1] == "b" and len(calls) == 4
    assert client._request("GET", "/busy", HealthOut).time == ord("c")  # a 5xx moves on too
    down.update({"b", "c"})
    with pytest.raises(RegistryUnavailable, match="each of 3 registries"):
        client.health()
    assert len(sleeps) == 1  # one backoff between the two rounds through all three


def test_join_passes_several_registry_urls_through_unchanged() -> None:
    urls = "http://127.0.0.1:8000,http://127.0.0.1:8001"
    config = load_config({"registry_url": urls}, None, env={}, preset="lan")
    assert config.network.registry_url == urls
    assert RegistryClient(urls).base_url == urls  # what the node compares


# ---- two registries in one process -----------------------------------------------------------


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[RegistryServer, RegistryServer]]:
    liveness = LivenessConfig(suspect_after=2, dead_after=4, sweep_interval=0.2)
    with fresh_postgres() as url:
        a = RegistryServer(url, liveness=liveness)
        b = RegistryServer(url, liveness=liveness)
        a.start()
        b.start()
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()


@pytest.mark.slow
def test_two_registries_share_writes_races_and_expiry(
    two: tuple[RegistryServer, RegistryServer],
) -> None:
    a, b = two
    assert a.url and b.url
    ca, cb = RegistryClient(a.url), RegistryClient(b.url)
    try:
        for i in range(12):
            (ca if i % 2 else cb).register(f"n{i}", f"n{i}", f"127.0.0.1:{7000 + i}", model=MODEL)

        # Heartbeats: n0 and n1 only through A, n2..n10 only through B, n11 none (it falls
        # silent). One of the two registries sweeps; neither may expire a node the other heard.
        def beat(stop: threading.Event) -> None:
            while not stop.is_set():
                for i in range(11):
                    with contextlib.suppress(RegistryError, RegistryUnavailable):
                        (ca if i < 2 else cb).heartbeat(f"n{i}")
                stop.wait(0.3)

        stop = threading.Event()
        beater = threading.Thread(target=beat, args=(stop,), daemon=True)
        beater.start()
        # Registered through A a moment ago: B answers its heartbeat (it asks the database).
        assert cb.heartbeat("n1", round=1).status == "alive"
        etag = httpx.get(f"{b.url}/groups").headers["etag"]
        ca.create_group("race", "n0", "127.0.0.1:1", MODEL, capacity=4, id="g-race")
        assert wait_until(lambda: [g.id for g in cb.groups()] == ["g-race"], timeout=5)
        assert httpx.get(f"{b.url}/groups").headers["etag"] != etag
        # Eleven joins for three places, through both registries at once.
        clients = [RegistryClient(a.url if i % 2 else b.url) for i in range(12)]
        results = race(
            [lambda c=clients[i], i=i: c.join_group(f"n{i}", "g-race") for i in range(1, 12)]
        )
        won = [r for r in results if isinstance(r, GroupOut)]
        lost = [r for r in results if isinstance(r, RegistryError) and r.status == 409]
        print(f"11 joins for 3 places through two registries: {len(won)} won, {len(lost)} refused")
        assert len(won) == 3 and len(lost) == 8, results
        # Each registry's view catches up with the other's writes within its poll interval.
        assert wait_until(lambda: len(ca.group("g-race").members) == 4, timeout=5)
        members = ca.group("g-race").members
        assert wait_until(lambda: cb.group("g-race").members == members, timeout=5)
        for term in (2, 3, 4):
            claims = race(
                [
                    lambda t=term: clients[1].claim_leadership("g-race", members[1], t, "h:11"),
                    lambda t=term: clients[2].claim_leadership("g-race", members[2], t, "h:12"),
                ]
            )
            assert sum(isinstance(r, GroupOut) for r in claims) == 1, claims
            for c in (ca, cb):
                assert wait_until(lambda c=c, t=term: c.group("g-race").term == t, timeout=5)
        for c in clients:
            c.close()

        try:
            wait_for(lambda: cb.node("n11").status == "dead", 20, what="n11 expired")
            statuses = {n.id: n.status for n in ca.nodes()}
        finally:
            stop.set()
            beater.join(5)
        expired = sorted({e.node for e in ca.events() if e.kind == "expired"})
        print(f"statuses: {statuses}; expired: {expired}")
        assert expired == ["n11"]
        assert all(statuses[f"n{i}"] == "alive" for i in range(11))
    finally:
        ca.close()
        cb.close()


# ---- two registry processes, one killed under traffic ----------------------------------------


@pytest.mark.slow
def test_killing_one_of_two_registries_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with fresh_postgres() as url:
        extra = ("--suspect-after", "3", "--dead-after", "6", "--sweep-interval", "0.2")
        first = RegistryProcess(url, extra=extra)  # type: ignore[arg-type]
        second = RegistryProcess(url, extra=extra)  # type: ignore[arg-type]
        try:
            both = f"{first.url},{second.url}"
            setup = RegistryClient(both)
            nodes = [f"k{i}" for i in range(24)]
            for i, node_id in enumerate(nodes):
                setup.register(node_id, node_id, f"127.0.0.1:{8000 + i}", model=MODEL)
            groups = ["ga", "gb", "gc"]
            for g, leader in zip(groups, nodes, strict=False):
                setup.create_group(g, leader, "127.0.0.1:1", MODEL, capacity=12, id=g)
            acked: dict[str, str | None] = {n: None for n in nodes}
            acked.update(dict(zip(nodes, groups, strict=False)))
            stop = threading.Event()
            killed = threading.Event()
            done_after_kill = [0]
            failures: list[str] = []
            lock = threading.Lock()

            def churn(mine: list[str], seed: int) -> None:
                rng = random.Random(seed)
                client = RegistryClient(both, timeout=2.0, retries=2, backoff=0.05)
                try:
                    while not stop.is_set():
                        node_id = rng.choice(mine)
                        target = rng.choice([*groups, None])
                        try:
                            if target is None:
                                got = client.leave_group(node_id).group
                            else:
                                got = client.join_group(node_id, target).id
                        except RegistryError as exc:
                            if exc.status == 409:  # full or leader-only rules: nothing changed
                                continue
                            failures.append(f"{node_id}: {exc}")
                            continue
                        except RegistryUnavailable as exc:
                            failures.append(f"{node_id}: {exc}")
                            continue
                        with lock:
                            acked[node_id] = got
                            if killed.is_set():
                                done_after_kill[0] += 1
                finally:
                    client.close()

            def heartbeats() -> None:
                client = RegistryClient(both, timeout=2.0, retries=2, backoff=0.05)
                while not stop.is_set():
                    for node_id in nodes:
                        with contextlib.suppress(RegistryError, RegistryUnavailable):
                            client.heartbeat(node_id)
                    stop.wait(0.5)
                client.close()

            shards = [nodes[3 + k :: 4] for k in range(4)]  # founders stay put
            threads = [
                threading.Thread(target=churn, args=(shard, k), daemon=True)
                for k, shard in enumerate(shards)
            ]
            threads.append(threading.Thread(target=heartbeats, daemon=True))
            for t in threads:
                t.start()
            wait_for(lambda: sum(v is not None for v in acked.values()) > 6, 20, what="traffic")
            time.sleep(1.0)  # a second of traffic through the first registry
            first.kill()  # no shutdown: its last heartbeats and open connections are lost
            killed.set()
            wait_for(lambda: done_after_kill[0] >= 20, 60, what="20 changes after the kill")
            time.sleep(7)  # longer than dead_after: expiry must now run in the survivor
            stop.set()
            for t in threads:
                t.join(15)
            print(
                f"{done_after_kill[0]} membership changes acknowledged after the kill; "
                f"failures: {failures[:3]}"
            )
            assert failures == []
            with RegistryClient(second.url) as survivor:
                truth = {n.id: n for n in survivor.nodes()}
                final = {nid: truth[nid].group for nid in nodes}
                assert final == acked, {
                    k: (acked[k], final[k]) for k in nodes if acked[k] != final[k]
                }
                assert all(truth[nid].status == "alive" for nid in nodes)
                for g in survivor.groups(include_dissolved=True):
                    assert len(g.members) <= g.capacity
                    assert sorted(g.members) == sorted(n for n in nodes if final[n] == g.id)
                events = survivor.events()
                assert "expired" not in {e.kind for e in events}
                ids = [e.id for e in events]
                assert ids == sorted(set(ids))
        finally:
            first.stop()
            second.stop()


@pytest.mark.slow
def test_an_unreachable_postgres_is_one_line_without_the_password(tmp_path: Path) -> None:
    from tests.test_reliability_bootstrap_cli import assert_one_line, run_bootstrap

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    url = f"postgresql://reg:s3cret@127.0.0.1:{port}/registry"
    done = run_bootstrap("--port", "0", "--db", url, cwd=tmp_path)
    assert_one_line(done, 1, f"cannot open database postgresql://reg:***@127.0.0.1:{port}")
    assert "s3cret" not in done.stderr + done.stdout
