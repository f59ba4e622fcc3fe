"""Node pieces on their own: scoring probed models, the life cycle, a refused join."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from bootstrap.server import RegistryServer
from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipNode
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.learning import models
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.lifecycle import IllegalTransition, Lifecycle, Phase
from mycelium_p2p.node import ISLAND_CHECK_INTERVAL, PEER_LOOKUP_INTERVAL, Node
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.policy import Decision
from mycelium_p2p.registry_client import RegistryClient
from tests.helpers import wait_for


@pytest.fixture(scope="module")
def node() -> Node:
    return Node(NodeConfig.test(), load_node_data("digits:iid", 0, 4, seed=0), node_id="unit")


def test_a_probed_model_of_the_wrong_shape_or_with_nan_is_refused(node: Node) -> None:
    good = models.get_weights(node.local_model)
    assert 0.0 <= node._score(good, node.data.val) <= 1.0
    with pytest.raises(ValueError, match="shape"):
        node._score([w[..., :1] for w in good], node.data.val)
    poisoned = [w.copy() for w in good]
    poisoned[0][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        node._score(poisoned, node.data.val)
    with pytest.raises(ValueError, match="arrays"):
        node._score(good[:-1], node.data.val)


def test_life_cycle_allows_only_its_transitions() -> None:
    cycle = Lifecycle()
    assert cycle.move(Phase.DISCOVERING) is Phase.STARTING
    with pytest.raises(IllegalTransition):
        cycle.move(Phase.LEADER)  # a node must join or found first
    for phase in (Phase.JOINING, Phase.LEADER, Phase.JOINING, Phase.MEMBER, Phase.LEAVING):
        cycle.move(phase)
    cycle.move(Phase.STOPPED)
    with pytest.raises(IllegalTransition):
        cycle.move(Phase.DISCOVERING)


@dataclass
class Registered:
    """A registry (served on a thread) and a node registered there, its control loop not running."""

    node: Node
    registry: RegistryClient


@pytest.fixture
def registered(tmp_path: Path) -> Iterator[Registered]:
    server = RegistryServer(tmp_path / "r.db")
    url = server.start()
    config = replace(NodeConfig.test(), registry_url=url)
    node = Node(config, load_node_data("digits:iid", 1, 4, seed=0), node_id="under-test")
    node.gossip.start()  # the parts of start() these tests need, without the control loop
    node._enter(Phase.DISCOVERING, "test")
    client = RegistryClient(url)
    try:
        assert node._register()
        yield Registered(node, client)
    finally:
        client.close()
        node.client.close()
        node.gossip.stop()
        if node.registry is not None:
            node.registry.close()
        server.stop()


def test_a_refused_join_is_not_retried_until_the_group_record_changes(
    registered: Registered,
) -> None:
    """A stale view (a full group that looks roomy) costs one refused join, not a back-off."""
    node, client = registered.node, registered.registry
    # The group's leader, alive in gossip (a group nobody says it is in would be a zombie).
    leader = GossipNode("full-leader", GossipConfig.test(), meta={"group": "g-1"})
    leader.start()
    try:
        assert node.gossip.join([str(leader.address)], timeout=5.0)
        client.register("full-leader", "L", "127.0.0.1:1", model=node.spec)
        client.create_group("g", "full-leader", "127.0.0.1:2", node.spec, capacity=1, id="g-1")
        stale = GroupRecord(id="g-1", leader="full-leader", members=("full-leader",),
                            model=node.spec, capacity=5, term=1, version=1)  # fmt: skip
        leader.publish_group(stale)  # gossip says there is room; the registry knows better

        def candidates() -> list[str | None]:
            return [c.group_id for c in node._candidates(evaluate_models=False)]

        wait_for(lambda: candidates() == ["g-1"], 10, what="the record reaching the node")
        node._registry_backoff = 16.0  # as if the registry had been away for a while
        node._act(Decision("join", "g-1", "best"), first=True)
        assert node.group_id is None and node.phase is Phase.DISCOVERING
        assert node._next_choice - node.clock() <= 1.0  # soon: the registry is back and answered
        assert candidates() == []  # that record was refused
        # News of the group (a new term, other members) makes it a candidate again.
        leader.publish_group(replace(stale, term=2, version=1))
        wait_for(lambda: candidates() == ["g-1"], 10, what="the newer record")
    finally:
        leader.stop()


def test_a_node_in_no_group_frees_the_slot_the_registry_still_gives_it(
    registered: Registered,
) -> None:
    """E.g. it gave its group up while the registry was out of reach: the heartbeat fixes it."""
    node, client = registered.node, registered.registry
    client.register("lead", "L", "127.0.0.1:1", model=node.spec)
    client.create_group("g", "lead", "127.0.0.1:2", node.spec, capacity=2, id="g-1")
    client.join_group(node_id=node.id, group_id="g-1")
    assert node.group_id is None
    node._heartbeat(node._registry_client())  # the answer says g-1: reconcile queued
    node._drain_events()
    assert {n.id: n.group for n in client.nodes()} == {"lead": "g-1", node.id: None}


def test_a_lost_claim_whose_winner_is_out_of_reach_gives_the_group_up(
    registered: Registered,
) -> None:
    """Across a partition the winner's record never comes: do not wait for it."""
    node, client = registered.node, registered.registry
    for other in ("old", "winner"):
        client.register(other, other, "127.0.0.1:1", model=node.spec)
    client.create_group("g", "old", "127.0.0.1:2", node.spec, capacity=3, id="g-1")
    for member in ("winner", node.id):
        client.join_group(node_id=member, group_id="g-1")
    client.claim_leadership("g-1", node_id="winner", term=2, flower_address="h:3")
    node.group_id, node.term = "g-1", 1
    for phase in (Phase.JOINING, Phase.MEMBER):
        node._enter(phase, "test")
    seen = GroupRecord(id="g-1", leader="old", members=("old", "winner", node.id),
                       model=node.spec, capacity=3, term=1, version=3)  # fmt: skip
    node._claim(seen)  # term 2 is taken; "winner" is nowhere in this node's gossip
    assert node.group_id is None and node.phase is Phase.DISCOVERING
    assert client.node(node.id).group is None  # and its slot is free


def test_island_checks_slow_down_while_they_find_nothing_new(registered: Registered) -> None:
    node, client = registered.node, registered.registry
    peers = [GossipNode(f"peer-{i}", GossipConfig.test()) for i in range(2)]
    for peer in peers:
        peer.start()
    try:
        client.register("peer-0", "p0", str(peers[0].address), model=node.spec)
        assert node.gossip.join([str(peers[0].address)], timeout=5.0)
        node._find_peers()  # the registry knows nobody gossip does not
        node._find_peers()
        assert node._island_interval == 4 * ISLAND_CHECK_INTERVAL
        client.register("peer-1", "p1", str(peers[1].address), model=node.spec)
        node._find_peers()  # an island: joined, and looked at again soon
        assert node._island_interval == ISLAND_CHECK_INTERVAL
        assert node._next_peer_lookup - node.clock() <= PEER_LOOKUP_INTERVAL

        def alive() -> set[str]:
            return {m.id for m in node.gossip.members() if m.status == "alive"}

        wait_for(lambda: "peer-1" in alive(), 5, what="the island merged")
    finally:
        for peer in peers:
            peer.stop()
