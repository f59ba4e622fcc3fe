"""Churn: nodes join and leave (gracefully or by crashing) continuously for most of a minute.

In-process nodes over the real registry, gossip and Flower. Afterwards the registry holds no
slot of a departed node, and this process has no more threads or file descriptors than it had
before the churn (beyond a small allowance for lazily created pools).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest

from cli.cluster import LocalCluster
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from tests.helpers import wait_for
from tests.reliability_support import describe, registry_groups, resources, wait_settled

pytestmark = pytest.mark.slow

BASE = 3  # nodes that stay all along
CHURN_SECONDS = 45.0
MAX_CHURNERS = 3


def test_churn_leaks_no_slots_threads_or_descriptors() -> None:
    rng = random.Random(7)
    config = replace(NodeConfig.test(), group_capacity=3)
    datas = [load_node_data("digits:iid", i, 6, seed=0) for i in range(6)]
    with LocalCluster(datas[:BASE], config) as cluster:
        base_ids = {n.id for n in cluster.nodes}
        wait_for(lambda: all(n.group_id for n in cluster.nodes), 60, what="base nodes in groups")
        made = 0

        def newcomer() -> Node:
            nonlocal made
            made += 1
            node_config = replace(
                config, registry_url=cluster.url, name=f"churn-{made}", node_index=made % 6
            )
            node = Node(node_config, datas[made % 6], node_id=f"c{made:03d}", rng=rng)
            node.start()
            return node

        # One warm-up cycle creates the lazily built pools (gRPC, torch) before the baseline.
        warm = newcomer()
        wait_for(lambda: warm.group_id, 60, what="the warm-up node in a group")
        warm.stop()
        fds_before = wait_settled(lambda: resources()[0], 20)
        threads_before = wait_settled(lambda: resources()[1], 20)

        churners: list[Node] = []
        joins = leaves = crashes = 0
        end = time.monotonic() + CHURN_SECONDS
        while time.monotonic() < end:
            if len(churners) < MAX_CHURNERS and (not churners or rng.random() < 0.6):
                churners.append(newcomer())
                joins += 1
            else:
                gone = churners.pop(rng.randrange(len(churners)))
                if rng.random() < 0.3:
                    gone.crash()
                    crashes += 1
                else:
                    gone.stop()
                    leaves += 1
            time.sleep(rng.uniform(1.0, 3.0))  # pacing of the churn itself, not a wait
        for node in churners:
            node.stop()
            leaves += 1

        # The registry forgets every departed node (crashed ones by expiry), leaking no slot.
        def clean() -> bool:
            groups = registry_groups(cluster.url)
            members = [m for g in groups.values() for m in g["members"]]
            return sorted(members) == sorted(base_ids) and all(
                n.group_id in groups for n in cluster.nodes
            )

        try:
            wait_for(clean, 60, interval=0.5, what="registry groups holding only the base nodes")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe(cluster.nodes, cluster.url)}") from None
        fds_after = wait_settled(lambda: resources()[0], 30)
        threads_after = wait_settled(lambda: resources()[1], 30)
        print(
            f"churn {CHURN_SECONDS:.0f}s: {joins} joins, {leaves} leaves, {crashes} crashes; "
            f"fds {fds_before}->{fds_after}, threads {threads_before}->{threads_after}; "
            f"registry groups hold only the {BASE} base nodes"
        )
        # Per churner a node holds ~10 fds and ~10 threads; a leak of even one node's worth
        # over 15+ churners would exceed these allowances.
        assert fds_after <= fds_before + 8
        assert threads_after <= threads_before + 4
