"""The in-memory network: real gossip threads over it on the wall clock, and partitions."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import SimCluster
from mycelium_p2p.gossip.messages import Status
from mycelium_p2p.gossip.transport import Partition
from mycelium_p2p.gossip.transport.memory import FakeClock, MemoryNetwork, RealTime
from mycelium_p2p.groups import GossipNode, GroupRecord
from tests.helpers import wait_for

CFG = GossipConfig.test()


@pytest.fixture
def network() -> Iterator[MemoryNetwork]:
    driver = RealTime()
    yield MemoryNetwork(random.Random(1), latency=(0.001, 0.003), driver=driver)
    driver.close()


def node(network: MemoryNetwork, name: str, port: int, **kw: object) -> GossipNode:
    n = GossipNode(name, CFG, transport=network.transport(f"10.0.0.{port}:7946"), **kw)  # type: ignore[arg-type]
    n.start()
    return n


def status(of: GossipNode, node_id: str) -> str | None:
    return next((m.status for m in of.members() if m.id == node_id), None)


def test_two_gossip_nodes_converge_over_the_real_time_memory_network(
    network: MemoryNetwork,
) -> None:
    a = node(network, "a", 1, meta={"name": "a", "group": "g-1"}, registry_url="http://r:1")
    b = node(network, "b", 2, meta={"name": "b"})
    try:
        assert b.join([str(a.address)], timeout=5.0)
        assert b.registry_url == "http://r:1"
        wait_for(lambda: status(a, "b") == "alive" and status(b, "a") == "alive", 10, what="views")
        record = GroupRecord("g-1", leader="a", leader_address=str(a.address), term=1, version=1)
        assert a.publish_group(record)
        wait_for(lambda: b.groups().get("g-1") == record, 10, what="the record on b")
        assert b.group_members("g-1") == ["a"]
        a.set_model_provider(lambda gid: (3, b"w" * 100_000) if gid == "g-1" else None)
        assert b.request_model(str(a.address), "g-1", timeout=5.0) == (3, b"w" * 100_000)
        assert b.request_model(str(a.address), "g-2", timeout=5.0) is None
        b.update_meta(group="g-1")
        wait_for(lambda: a.group_members("g-1") == ["a", "b"], 10, what="b's metadata on a")
        b.leave(timeout=1.0)
        wait_for(lambda: status(a, "b") == "left", 10, what="b's leave on a")
        assert network.stats["delivered"] > 0
    finally:
        a.stop()
        b.stop()


def test_a_cut_drops_frames_both_ways_until_healed() -> None:
    clock = FakeClock()
    net = MemoryNetwork(random.Random(2), driver=clock)
    got: list[tuple[str, bytes]] = []
    for address in ("a:1", "b:1", "c:1"):
        net.attach(address, lambda src, token, frame, at=address: got.append((at, frame)))
    net.cut(["a:1"], ["b:1"])
    for src, dest in (("a:1", "b:1"), ("b:1", "a:1"), ("a:1", "c:1"), ("c:1", "b:1")):
        net.send(src, dest, f"{src}>{dest}".encode())
    clock.run_until(1.0)
    assert sorted(f for _, f in got) == [b"a:1>c:1", b"c:1>b:1"]
    assert net.stats["partitioned"] == 2 and net.partition.dropped == 2
    net.heal()
    net.send("a:1", "b:1", b"again")
    clock.run_until(2.0)
    assert ("b:1", b"again") in got


def test_a_partitioned_transport_drops_what_crosses(network: MemoryNetwork) -> None:
    partition = Partition()
    a = partition.wrap(network.transport("a:1"))
    b = partition.wrap(network.transport("b:1"))
    partition.cut([a.address], [b.address])
    assert not a.send("b:1", b"x") and b.request("a:1", b"y", timeout=0.1) is None
    assert partition.dropped == 2 and a.stats()["partitioned"] == 2
    partition.heal()
    assert a.send("b:1", b"x")
    assert b.receive(2.0) and not b.receive(0.0)


def test_halves_of_a_simulated_network_declare_each_other_dead_then_heal() -> None:
    config = CFG.replace(dead_ttl=60.0)  # remembered (and gossiped to) while the test runs
    c = SimCluster(20, config, seed=5)
    c.run_until(1.0)
    addresses = list(c.cores)
    left, right = addresses[:10], addresses[10:]
    ids = {a: c.cores[a].node_id for a in addresses}
    c.net.cut(left, right)

    def statuses_across(status: Status) -> bool:
        for mine, other in ((left, right), (right, left)):
            for a in mine:
                members = c.cores[a].membership.members
                if any(members[ids[o]].status is not status for o in other):
                    return False
        return True

    assert c.run_while(lambda: not statuses_across(Status.DEAD), 60.0, 0.5)
    assert c.net.stats["partitioned"] > 0
    # Healed, nothing crosses by itself (each half gossips within itself): one node joins
    # through the other half (a Mycelium node does when the registry names peers it cannot
    # see); told they are dead, members refute, and the refutations reach the recently dead.
    c.net.heal()
    c.join(left[0], right[0])
    assert c.run_while(lambda: not statuses_across(Status.ALIVE), 30.0, 0.5)
