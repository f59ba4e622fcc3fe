"""One set of registry tests run against each database backend: SQLite and PostgreSQL.

Every test takes an empty database of each backend (a file, or a fresh database on the server
named by ``MYCELIUM_TEST_POSTGRES``) and drives the real store or a real uvicorn server over
HTTP: membership rules, capacity and term races, heartbeats kept in memory and flushed, expiry,
restarts, snapshot ETags, group commit, 64-bit numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bootstrap.server import RegistryServer
from bootstrap.store import LivenessConfig, RegistryStore
from mycelium_p2p.limits import MAX_COUNTER
from mycelium_p2p.registry_api import (
    CreateGroupBody,
    GroupOut,
    HeartbeatBody,
    LeaderBody,
    PerformanceBody,
    RegisterBody,
)
from mycelium_p2p.registry_client import RegistryClient, RegistryError
from tests.helpers import race, wait_until
from tests.registry_backends import BACKENDS, database

MODEL = "mlp:1x8x8:10"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.123456) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    with database(request.param, tmp_path) as target:
        yield target


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db: str | Path, clock: FakeClock) -> Iterator[RegistryStore]:
    s = RegistryStore(db, LivenessConfig(suspect_after=10, dead_after=30), clock=clock)
    s.open()
    yield s
    s.close()


def register(store: RegistryStore, *ids: str) -> None:
    for node_id in ids:
        store.register(RegisterBody(id=node_id, name=node_id, gossip_address="h:1", model=MODEL))


def found(store: RegistryStore, group_id: str, leader: str, capacity: int = 5) -> None:
    body = CreateGroupBody(
        name=group_id, leader=leader, flower_address="h:2", model=MODEL, id=group_id,
        capacity=capacity,
    )  # fmt: skip
    store.create_group(body)


# ---- membership rules ------------------------------------------------------------------------


def test_membership_migration_dissolution_and_events(store: RegistryStore) -> None:
    register(store, "a", "b", "c")
    found(store, "g1", "a")
    found(store, "g2", "b")
    store.join("c", "g1")
    g = store.join("a", "g2", reason="better")  # the founder migrates: g1 keeps c, leaderless
    assert g.members == ["a", "b"]
    g1 = store.group("g1")
    assert (g1.leader, g1.status, g1.members) == (None, "leaderless", ["c"])
    store.leave("c")
    assert store.group("g1").status == "dissolved"
    assert [x.id for x in store.groups()] == ["g2"]
    kinds = [e.kind for e in store.events()]
    assert kinds[-3:] == ["migrated", "left", "dissolved"]
    migrated = [e for e in store.events() if e.kind == "migrated"][-1]
    assert migrated.data == {"from": "g1", "to": "g2", "reason": "better"}
    assert {n.id: n.group for n in store.nodes()} == {"a": "g2", "b": "g2", "c": None}
    with pytest.raises(Exception, match="already exists"):
        found(store, "g2", "c")
    removed = store.remove("b")
    assert removed.status == "gone" and store.group("g2").members == ["a"]


def test_refusals_in_one_batch_undo_only_themselves(store: RegistryStore) -> None:
    register(store, *[f"n{i}" for i in range(8)])
    found(store, "small", "n0", capacity=3)
    futures = [store.submit(store.writes.join, f"n{i}", "small", None) for i in range(1, 8)]
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result(30).id)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes.count("small") == 2 and outcomes.count("Conflict") == 5, outcomes
    assert len(store.group("small").members) == 3
    in_group = [n.id for n in store.nodes() if n.group == "small"]
    assert sorted(in_group) == store.group("small").members
    print(f"7 joins for 2 places: {outcomes}; {store.commits.commits} commits so far")


def test_capacity_and_term_races_over_http(db: str | Path) -> None:
    with RegistryServer(db) as server:
        assert server.url is not None
        clients = [RegistryClient(server.url) for _ in range(12)]
        try:
            for i, c in enumerate(clients):
                c.register(f"r{i}", f"r{i}", f"127.0.0.1:{9000 + i}", model=MODEL)
            clients[0].create_group("race", "r0", "127.0.0.1:1", MODEL, capacity=4, id="g-race")
            calls = [
                (lambda c=c, i=i: c.join_group(f"r{i}", "g-race"))
                for i, c in enumerate(clients[1:], 1)
            ]
            results = race(calls)
            won = [r for r in results if isinstance(r, GroupOut)]
            lost = [r for r in results if isinstance(r, RegistryError)]
            print(f"11 joins for 3 places: {len(won)} won, {len(lost)} refused")
            assert len(won) == 3 and len(lost) == 8, results
            assert all(e.status == 409 and "full" in e.detail for e in lost)
            members = clients[0].group("g-race").members
            assert len(members) == 4
            in_group = [n.id for n in clients[0].nodes() if n.group == "g-race"]
            assert sorted(in_group) == sorted(members)
            for term in (2, 3, 4, 5):
                a, b = members[1], members[2]
                claims = race(
                    [
                        lambda t=term, n=a: clients[1].claim_leadership(
                            "g-race", n, t, "127.0.0.1:11"
                        ),
                        lambda t=term, n=b: clients[2].claim_leadership(
                            "g-race", n, t, "127.0.0.1:12"
                        ),
                    ]
                )
                wins = [r for r in claims if isinstance(r, GroupOut)]
                losses = [r for r in claims if isinstance(r, RegistryError)]
                assert len(wins) == 1 and len(losses) == 1, claims
                assert losses[0].status == 409
                group = clients[0].group("g-race")
                assert group.term == term and group.leader == wins[0].leader
        finally:
            for c in clients:
                c.close()


# ---- heartbeats ------------------------------------------------------------------------------


def test_heartbeat_semantics_over_http(db: str | Path) -> None:
    with RegistryServer(db) as server, httpx.Client(base_url=str(server.url)) as http:
        node = {"id": "n", "name": "n", "gossip_address": "127.0.0.1:1", "model": MODEL}
        assert http.post("/nodes/register", json=node).status_code == 200
        ok = http.post("/nodes/n/heartbeat", json={"accuracy": 0.5, "round": 3})
        assert ok.status_code == 200 and ok.json()["metrics"]["round"] == 3
        bad = http.post("/nodes/n/heartbeat", json={"accuracy": 1.5, "loss": 0.25})
        assert bad.status_code == 400
        assert "accuracy" in bad.json()["detail"] and "liveness was recorded" in bad.text
        metrics = http.get("/nodes/n").json()["metrics"]
        assert metrics == {"accuracy": 0.5, "loss": 0.25, "round": 3}
        unknown = http.post("/nodes/ghost/heartbeat", json={})
        assert unknown.status_code == 404 and "unknown" in unknown.json()["detail"]
        assert http.delete("/nodes/n").status_code == 200
        gone = http.post("/nodes/n/heartbeat", json={})
        assert gone.status_code == 409 and "register" in gone.json()["detail"]


def test_heartbeats_are_flushed_in_one_write_within_the_interval(
    store: RegistryStore, clock: FakeClock
) -> None:
    register(store, *[f"n{i}" for i in range(50)])
    registered_at = clock.now
    clock.now += 5.5
    before = store.commits.commits
    for i in range(50):
        store.heartbeat(f"n{i}", HeartbeatBody(round=i))

    def stored() -> list[tuple[Any, ...]]:
        return store.db.rows("SELECT last_seen, round FROM nodes ORDER BY id")

    assert all(row[0] == registered_at for row in stored())  # answered from memory
    assert wait_until(lambda: all(row[0] == clock.now for row in stored()), timeout=5)
    flushes = store.commits.commits - before
    print(f"50 heartbeats written by {flushes} transaction(s)")
    assert flushes <= 2
    assert sorted(row[1] for row in stored()) == list(range(50))


def test_a_flushed_heartbeat_never_brings_back_a_gone_node(
    store: RegistryStore, clock: FakeClock
) -> None:
    register(store, "n")
    clock.now += 1
    store.heartbeat("n", HeartbeatBody())
    # The node leaves before the heartbeat is written; the flush must not make it alive.
    store.db.run("UPDATE nodes SET status = 'gone' WHERE id = 'n'")
    store.commits.call(lambda: None)  # a batch: writes the heartbeat kept in memory
    assert store.db.rows("SELECT status FROM nodes WHERE id = 'n'")[0][0] == "gone"


# ---- expiry and restarts ---------------------------------------------------------------------


def test_expiry_reads_memory_and_expires_only_the_silent(
    store: RegistryStore, clock: FakeClock
) -> None:
    register(store, "a", "b", "c")
    found(store, "g1", "a")
    store.join("b", "g1")
    clock.now += 11
    store.heartbeat("b", HeartbeatBody())  # in memory only until the sweep writes it
    store.heartbeat("c", HeartbeatBody())
    assert store.sweep() == 1
    assert {n.id: n.status for n in store.nodes()} == {"a": "suspect", "b": "alive", "c": "alive"}
    clock.now += 20
    store.sweep()
    assert {n.id: n.status for n in store.nodes()} == {"a": "dead", "b": "suspect", "c": "suspect"}
    g = store.group("g1")
    assert (g.leader, g.status, g.members) == (None, "leaderless", ["b"])
    g = store.claim_leader("g1", LeaderBody(node_id="b", term=2, flower_address="h:9"))
    assert (g.leader, g.term) == ("b", 2)
    assert sorted(store.peers(10)) == ["h:1", "h:1"]
    revived = store.heartbeat("a", HeartbeatBody())
    assert (revived.status, revived.group) == ("alive", None)


def test_restart_keeps_acknowledged_writes_and_gives_a_grace_period(
    db: str | Path, clock: FakeClock
) -> None:
    liveness = LivenessConfig(suspect_after=10, dead_after=30)
    store = RegistryStore(db, liveness, clock=clock)
    store.open()
    register(store, "a", "b")
    found(store, "g1", "a")
    store.join("b", "g1")
    store.report_performance(
        "g1", PerformanceBody(node_id="a", term=1, accuracy=0.5, loss=1.0, round=7, examples=9)
    )
    store.heartbeat("b", HeartbeatBody(accuracy=0.25))
    store.close()  # a clean stop writes the heartbeat kept in memory
    clock.now += 1000
    again = RegistryStore(db, liveness, clock=clock)
    again.open()
    try:
        g = again.group("g1")
        assert (g.members, g.metrics.round) == (["a", "b"], 7)
        assert again.node("b").metrics.accuracy == 0.25
        again.sweep()
        assert {n.id: n.status for n in again.nodes()} == {"a": "alive", "b": "alive"}
        clock.now += 31
        again.sweep()
        assert {n.id: n.status for n in again.nodes()} == {"a": "dead", "b": "dead"}
    finally:
        again.close()


# ---- snapshots -------------------------------------------------------------------------------


def test_snapshot_reads_carry_etags_and_answer_304(db: str | Path) -> None:
    with RegistryServer(db) as server, httpx.Client(base_url=str(server.url)) as http:
        for i in range(3):
            node = {"id": f"n{i}", "name": "n", "gossip_address": f"127.0.0.1:{7000 + i}"}
            assert http.post("/nodes/register", json={**node, "model": MODEL}).status_code == 200
        group = {"id": "g1", "name": "g", "leader": "n0", "flower_address": "h:1", "model": MODEL}
        assert http.post("/groups", json=group).status_code == 201
        for path in ("/groups", "/groups/g1", "/network", "/peers"):
            first = http.get(path)
            etag = first.headers["etag"]
            again = http.get(path, headers={"If-None-Match": etag})
            print(f"{path}: ETag {etag}, then {again.status_code} with {len(again.content)} bytes")
            assert first.status_code == 200 and again.status_code == 304
            assert again.content == b"" and again.headers["etag"] == etag
        etag = http.get("/groups").headers["etag"]
        assert http.post("/groups/join", json={"node_id": "n1", "group_id": "g1"}).is_success
        changed = http.get("/groups", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert changed.json()[0]["members"] == ["n0", "n1"]  # read-your-writes
        assert http.get("/groups/nope").status_code == 404


# ---- group commit and numbers ----------------------------------------------------------------


def test_concurrent_writes_share_transactions(store: RegistryStore) -> None:
    before_commits, before_ops = store.commits.commits, store.commits.ops
    futures = [
        store.submit(
            store.writes.register,
            RegisterBody(id=f"n{i}", name="n", gossip_address="h:1", model=MODEL),
        )
        for i in range(200)
    ]
    assert all(f.result(30).status == "alive" for f in futures)
    commits = store.commits.commits - before_commits
    print(f"200 registrations in {commits} transactions")
    assert store.commits.ops - before_ops == 200 and commits < 200
    assert len(store.nodes()) == 200


def test_64_bit_numbers_and_exact_times(store: RegistryStore, clock: FakeClock) -> None:
    register(store, "a")
    found(store, "g1", "a")
    store.report_performance(
        "g1",
        PerformanceBody(
            node_id="a", term=1, accuracy=0.5, loss=1.0, round=MAX_COUNTER, examples=MAX_COUNTER
        ),
    )
    clock.now += 0.000123
    store.heartbeat("a", HeartbeatBody(round=MAX_COUNTER))
    store.sweep()  # writes the heartbeat
    g = store.group("g1")
    assert (g.metrics.round, g.metrics.examples) == (MAX_COUNTER, MAX_COUNTER)
    row = store.db.rows("SELECT last_seen, round FROM nodes WHERE id = 'a'")[0]
    assert row == (clock.now, MAX_COUNTER)
