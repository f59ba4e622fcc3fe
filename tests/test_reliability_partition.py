"""A gossip partition between two halves of a network, then healing.

Six in-process nodes over real ZeroMQ, Flower and HTTP; the cut is made at the gossip transport
(each node's ZeroMQ transport is wrapped: every frame to the other half is dropped), the registry
stays reachable from both halves (the arbiter of leadership terms, as a registry on a third
switch would be).
"""

from __future__ import annotations

import time

import pytest

from bootstrap.server import cluster_registry
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.testing.local_cluster import LocalCluster
from tests.helpers import wait_for
from tests.reliability_support import Partition, describe, registry_groups

pytestmark = pytest.mark.slow

NODES = 6


def rounds_led_by(side: list[Node]) -> dict[str, int]:
    """Rounds of the groups led from within ``side``, as that side's leaders publish them."""
    out: dict[str, int] = {}
    for node in side:
        record = node.gossip.groups().get(node.group_id or "")
        if node.phase is Phase.LEADER and record is not None and record.leader == node.id:
            out[record.id] = record.round
    return out


@pytest.mark.parametrize("cut", ["between-groups", "through-groups"])
def test_partition_then_heal_converges_to_one_leader_per_group(cut: str) -> None:
    config = NodeConfig.test().replace(group_capacity=3)
    datas = [load_node_data("digits:iid", i, NODES, seed=0) for i in range(NODES)]
    partition = Partition()
    with LocalCluster(
        datas, config, registry=cluster_registry, wrap_gossip_transport=partition.wrap
    ) as cluster:
        nodes = cluster.nodes

        def agreed() -> bool:
            truth = {g: set(r["members"]) for g, r in registry_groups(cluster.url).items()}
            return all(n.group_id in truth for n in nodes) and all(
                {g: set(r.members) for g, r in n.gossip.groups().items()} == truth for n in nodes
            )

        try:
            wait_for(agreed, 90, interval=0.5, what="groups formed and views agreeing")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe(nodes, cluster.url)}") from None
        first = nodes[0].group_id
        if cut == "between-groups":  # each half holds whole groups
            side_a = [n for n in nodes if n.group_id == first]
        else:  # each group loses a member to the other half: (leader, member) | (member)
            one = sorted((n for n in nodes if n.group_id == first), key=lambda n: n.phase.value)
            two = sorted((n for n in nodes if n.group_id != first), key=lambda n: n.phase.value)
            side_a = [*one[:2], two[-1]]
        side_b = [n for n in nodes if n not in side_a]
        # The groups the cut goes through, with their terms before it.
        terms = {
            gid: g["term"]
            for gid, g in registry_groups(cluster.url).items()
            if set(g["members"]) & {n.id for n in side_a}
            and set(g["members"]) & {n.id for n in side_b}
        }
        partition.cut(
            [str(n.gossip.address) for n in side_a], [str(n.gossip.address) for n in side_b]
        )
        cut_at = time.monotonic()

        # Each half sees the other half dead, and goes on training in groups led from inside it.
        def halves_apart() -> bool:
            for mine, other in ((side_a, side_b), (side_b, side_a)):
                others = {n.id for n in other}
                for node in mine:
                    live = {m.id for m in node.gossip.members() if m.status == "alive"}
                    if live & others:
                        return False
            return True

        wait_for(halves_apart, 60, what="each half seeing the other as gone")
        t_detect = time.monotonic() - cut_at

        # A group the cut goes through loses its leader on one side: a member there claims the
        # next term (the registry is reachable from both halves), which deposes the old leader
        # on the other side. Wait for that to play out, so that healing meets the hard case.

        def claimed() -> bool:
            now = registry_groups(cluster.url)
            return all(gid not in now or now[gid]["term"] > term for gid, term in terms.items())

        # Then each half re-forms on its own: every node in a group led from its own half, the
        # registry agreeing (the deposed leaders stepped down, the slots they held are free).
        def settled() -> bool:
            groups = registry_groups(cluster.url)
            for side in (side_a, side_b):
                ids = {n.id for n in side}
                for node in side:
                    group = groups.get(node.group_id or "")
                    if group is None or group["leader"] not in ids:
                        return False
                    if not set(group["members"]) <= ids:
                        return False
            return True

        try:
            wait_for(claimed, 60, interval=0.5, what="a new term in every group cut through")
            t_claimed = time.monotonic() - cut_at
            wait_for(settled, 60, interval=0.5, what="each half in groups led from inside it")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe(nodes, cluster.url)}") from None
        t_settled = time.monotonic() - cut_at
        start = {"a": rounds_led_by(side_a), "b": rounds_led_by(side_b)}

        def both_halves_train() -> bool:
            trains = True
            for key, side in (("a", side_a), ("b", side_b)):
                now = rounds_led_by(side)
                # A group first led from this side after the cut counts from where it starts.
                start[key] = {**{g: r for g, r in now.items()}, **start[key]}
                trains = trains and any(r >= start[key][g] + 2 for g, r in now.items())
            return trains

        try:
            wait_for(both_halves_train, 60, interval=0.5, what="two rounds on each side")
        except AssertionError as exc:
            rounds = {"a": rounds_led_by(side_a), "b": rounds_led_by(side_b)}
            raise AssertionError(
                f"{exc}: rounds now {rounds}, baselines {start}\n{describe(nodes, cluster.url)}"
            ) from None
        t_train = time.monotonic() - cut_at
        dropped = partition.dropped
        assert dropped > 0

        # --- heal ---------------------------------------------------------------------------
        partition.heal()
        healed_at = time.monotonic()

        def converged() -> bool:
            groups = registry_groups(cluster.url)
            if not agreed() or any(n.group_id is None for n in nodes):
                return False
            leaders = [n for n in nodes if n.phase is Phase.LEADER]
            by_group = {n.group_id for n in leaders}
            return (
                len(leaders) == len(groups) == len(by_group)
                and all(groups[n.group_id]["leader"] == n.id for n in leaders)
                and all(n.term == groups[n.group_id]["term"] for n in nodes)
            )

        try:
            wait_for(converged, 90, interval=0.5, what="one leader per group and agreeing views")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe(nodes, cluster.url)}") from None
        t_heal = time.monotonic() - healed_at
        groups = registry_groups(cluster.url)
        members = [m for g in groups.values() for m in g["members"]]
        assert sorted(members) == sorted(n.id for n in nodes)  # no phantom, none twice
        print(
            f"partition {cut} {len(side_a)}|{len(side_b)} ({len(terms)} group(s) across): "
            f"halves apart in "
            f"{t_detect:.1f}s, new terms by {t_claimed:.1f}s, each half in its own groups by "
            f"{t_settled:.1f}s, two rounds on each side (after that) by {t_train:.1f}s, "
            f"{dropped} frames "
            f"dropped; after healing one leader per group and equal views in {t_heal:.1f}s "
            f"({len(groups)} groups)"
        )
