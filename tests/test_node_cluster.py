"""Nodes over the real parts in one process: registry over HTTP, gossip over ZeroMQ, Flower."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bootstrap.server import cluster_registry
from cli.main import main
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.registry_client import RegistryClient
from mycelium_p2p.testing.local_cluster import LocalCluster
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def datas(spec: str, n: int) -> list:
    return [load_node_data(spec, i, n, seed=0) for i in range(n)]


def registry_groups(url: str) -> dict[str, set[str]]:
    with RegistryClient(url) as client:
        return {g.id: set(g.members) for g in client.groups()}


def test_nodes_form_groups_train_and_agree_with_the_registry() -> None:
    config = NodeConfig.test().replace(group_capacity=3)
    with LocalCluster(datas("digits:iid", 4), config, registry=cluster_registry) as cluster:
        # Four nodes, capacity three: at least two groups, none over capacity.
        wait_for(
            lambda: all(n.group_id for n in cluster.nodes), timeout=60, what="every node in a group"
        )
        groups = registry_groups(cluster.url)
        assert len(groups) >= 2
        assert all(len(members) <= 3 for members in groups.values())
        # Rounds advance and the group models learn (digits iid: well above chance).
        wait_for(
            lambda: all(
                (r := n.gossip.groups().get(n.group_id or "")) is not None
                and r.round >= 3
                and (r.accuracy or 0) > 0.5
                for n in cluster.nodes
            ),
            timeout=90,
            what="three rounds with accuracy above 0.5 in every group",
        )

        def views_agree() -> bool:
            truth = registry_groups(cluster.url)
            for node in cluster.nodes:
                seen = {gid: set(r.members) for gid, r in node.gossip.groups().items()}
                if seen != truth:
                    return False
            return all(node.group_id in truth for node in cluster.nodes)

        wait_for(views_agree, timeout=30, what="gossip views equal to the registry's groups")
        # `mycelium status --peer` shows a node's gossip view: the same groups and nodes.
        shown = CliRunner().invoke(main, ["status", "--peer", cluster.nodes[0].gossip.address])
        assert shown.exit_code == 0, shown.output
        assert "Groups (" in shown.output and "Nodes (4)" in shown.output
        for node in cluster.nodes:
            assert node.name in shown.output
        args = ["status", "--peer", cluster.nodes[1].gossip.address, "--json"]
        snapshot = json.loads(CliRunner().invoke(main, args).output)
        truth = registry_groups(cluster.url)
        assert {g["id"]: set(g["members"]) for g in snapshot["groups"]} == truth
        leaders = [n for n in cluster.nodes if n.phase is Phase.LEADER]
        assert len(leaders) == len(registry_groups(cluster.url))


def test_leader_failover_resumes_from_the_last_model() -> None:
    config = NodeConfig.test().replace(group_capacity=5)
    with LocalCluster(datas("digits:iid", 3), config, registry=cluster_registry) as cluster:
        wait_for(
            lambda: len(cluster.groups()) == 1 and all(n.group_id for n in cluster.nodes),
            timeout=60,
            what="one group of three",
        )
        gid = cluster.nodes[0].group_id
        member = next(n for n in cluster.nodes if n.phase is Phase.MEMBER)
        wait_for(
            lambda: (
                (r := member.gossip.groups().get(gid)) and r.round >= 3 and (r.accuracy or 0) > 0.5
            ),
            timeout=60,
            what="three rounds",
        )
        leader = next(n for n in cluster.nodes if n.phase is Phase.LEADER)
        old = member.gossip.groups()[gid]
        # Crash the leader: no graceful leave, its sockets just go away.
        leader.crash()
        survivors = [n for n in cluster.nodes if n is not leader]
        new_leader = wait_for(
            lambda: next((n for n in survivors if n.phase is Phase.LEADER), None),
            timeout=30,
            what="a new leader",
        )
        with RegistryClient(cluster.url) as client:
            group = client.group(gid)
        assert group.leader == new_leader.id
        assert group.term == old.term + 1
        # Both survivors may have claimed; the registry's compare-and-set let exactly one win.
        assert [n for n in survivors if n.phase is Phase.LEADER] == [new_leader]
        wait_for(
            lambda: (
                new_leader.latest_round is not None
                and (r := member.gossip.groups().get(gid))
                and r.term == old.term + 1
                and r.round > old.round
            ),
            timeout=30,
            what="rounds under the new leader",
        )
        resumed = member.gossip.groups()[gid]
        # It went on from the last global model: no fall back to chance (0.1).
        assert resumed.accuracy is not None and resumed.accuracy > 0.5
        assert all(n.group_id == gid for n in survivors)
