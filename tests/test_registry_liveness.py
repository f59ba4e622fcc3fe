"""Expiry: suspect, dead, leaving groups, dissolution and leaderless groups; fake clock first."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.server import RegistryServer
from bootstrap.store import LivenessConfig, RegistryStore
from mycelium_p2p.registry_api import CreateGroupBody, HeartbeatBody, LeaderBody, RegisterBody
from mycelium_p2p.registry_client import RegistryClient
from tests.helpers import wait_until

MODEL = "mlp:1x8x8:10"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[RegistryStore, FakeClock]:
    clock = FakeClock()
    store = RegistryStore(
        tmp_path / "r.db", LivenessConfig(suspect_after=10, dead_after=30), clock=clock
    )
    store.open()
    for n in ("a", "b", "c"):
        store.register(RegisterBody(id=n, name=n, gossip_address="h:1", model=MODEL))
    store.create_group(
        CreateGroupBody(name="g", leader="a", flower_address="h:2", model=MODEL, id="g1")
    )
    store.join("b", "g1")
    store.create_group(
        CreateGroupBody(name="solo", leader="c", flower_address="h:3", model=MODEL, id="g2")
    )
    return store, clock


def status(store: RegistryStore) -> dict[str, str]:
    return {n.id: n.status for n in store.nodes()}


def test_suspect_then_dead_leader_makes_group_leaderless(setup: tuple) -> None:
    store, clock = setup
    clock.now += 11
    store.heartbeat("b", HeartbeatBody())
    store.heartbeat("c", HeartbeatBody())
    assert store.sweep() == 1
    assert status(store) == {"a": "suspect", "b": "alive", "c": "alive"}
    assert store.group("g1").members == ["a", "b"]  # suspect nodes stay members
    clock.now += 20  # a silent for 31 s, b and c for 20 s
    store.sweep()
    assert status(store) == {"a": "dead", "b": "suspect", "c": "suspect"}
    g = store.group("g1")
    assert (g.leader, g.status, g.members) == (None, "leaderless", ["b"])
    kinds = [e.kind for e in store.events()]
    assert kinds[-2:] == ["expired", "left"]
    # A live member claims with term + 1.
    g = store.claim_leader("g1", LeaderBody(node_id="b", term=2, flower_address="h:9"))
    assert (g.leader, g.term, g.status) == ("b", 2, "active")
    assert "a" not in store.peers(10) and len(store.peers(10)) == 2


def test_group_with_no_live_member_dissolves(setup: tuple) -> None:
    store, clock = setup
    clock.now += 31
    store.heartbeat("a", HeartbeatBody())
    store.heartbeat("b", HeartbeatBody())
    store.sweep()
    assert store.group("g2").status == "dissolved"
    assert [g.id for g in store.groups()] == ["g1"]
    assert store.events()[-1].kind == "dissolved"
    # A dead node that heartbeats again is alive, in no group.
    node = store.heartbeat("c", HeartbeatBody(accuracy=0.5))
    assert (node.status, node.group) == ("alive", None)


@pytest.mark.slow
def test_expiry_runs_without_requests(tmp_path: Path) -> None:
    liveness = LivenessConfig(suspect_after=0.3, dead_after=0.6, sweep_interval=0.05)
    with RegistryServer(tmp_path / "r.db", liveness=liveness) as server:
        assert server.url is not None
        with RegistryClient(server.url) as client:
            client.register("a", "a", "127.0.0.1:1", model=MODEL)
            client.create_group("g", "a", "127.0.0.1:2", MODEL, id="g1")
            # No further requests change anything: only the expiry thread can.
            assert wait_until(lambda: client.node("a").status == "dead", timeout=10)
            assert client.group("g1").status == "dissolved"
            assert [e.kind for e in client.events()][-3:] == ["expired", "left", "dissolved"]


def test_restart_after_an_outage_gives_nodes_a_grace_period(tmp_path: Path) -> None:
    clock = FakeClock()
    liveness = LivenessConfig(suspect_after=10, dead_after=30)
    store = RegistryStore(tmp_path / "r.db", liveness, clock=clock)
    store.open()
    store.register(RegisterBody(id="a", name="a", gossip_address="h:1", model=MODEL))
    store.close()
    clock.now += 1000  # the registry was down far longer than dead_after
    store = RegistryStore(tmp_path / "r.db", liveness, clock=clock)
    store.open()
    store.sweep()
    assert status(store) == {"a": "alive"}  # silence counts from the restart only
    clock.now += 11
    store.sweep()
    assert status(store) == {"a": "suspect"}
    clock.now += 20
    store.sweep()
    assert status(store) == {"a": "dead"}
    store.close()
