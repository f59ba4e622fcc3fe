"""When the world moves, on the real system (registry over HTTP, gossip over ZeroMQ, Flower):
a node's data drifts to the other concept, nodes arrive late, a leader crashes during a drift.
Six to eight nodes of two label-shift concepts each time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bootstrap.server import cluster_registry
from cli.main import main
from mycelium_p2p.learning.data import NodeData, load_node_data
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.registry_client import RegistryClient
from mycelium_p2p.testing.local_cluster import LocalCluster
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

CONCEPTS = 2


def digits(index: int, nodes: int, concept: int | None = None) -> NodeData:
    """Node ``index``'s shard of the digits under concept ``index % 2`` (or ``concept``)."""
    spec = f"digits:label-shift:{CONCEPTS}" + ("" if concept is None else f":{concept}")
    return load_node_data(spec, index, nodes, seed=0)


def save_shard(path: Path, data: NodeData) -> None:
    parts = (data.train, data.val, data.test)
    np.savez(
        path,
        x=np.concatenate([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        concept=np.int64(data.concept or 0),
    )


def concept_of(node: Node) -> int | None:
    return node.learning.data.concept


def among_kin(cluster: LocalCluster, node: Node) -> bool:
    """``node`` sits in a group with others, all of its (current) concept."""
    mates = cluster.groups().get(node.group_id or "", [])
    return len(mates) > 1 and all(concept_of(m) == concept_of(node) for m in mates)


def settled(cluster: LocalCluster) -> bool:
    """Every live node in a group; one group per concept, each of one concept only."""
    live = cluster.live().values()
    groups = cluster.groups()
    return (
        all(n.group_id is not None for n in live)
        and len(groups) == CONCEPTS
        and all(len({concept_of(m) for m in members}) == 1 for members in groups.values())
    )


def test_a_drifted_node_recovers_in_its_new_concepts_group(tmp_path: Path) -> None:
    """``mycelium experiment --drift-shards``: site-1 (concept 1) switches to concept 0 data."""
    shards, drifted = tmp_path / "shards", tmp_path / "drift"
    shards.mkdir()
    drifted.mkdir()
    for index in range(6):
        save_shard(shards / f"site-{index}.npz", digits(index, 6))
    save_shard(drifted / "site-1.npz", digits(1, 6, concept=0))
    save_shard(drifted / "not-a-node.npz", digits(0, 6))  # no such node: ignored
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        main,
        [
            "experiment",
            *("--shards", str(shards), "--drift-shards", str(drifted), "--drift-at", "20"),
            *("--duration", "45", "--no-baselines", "--json", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    drift = results["drift"]
    assert drift["at"] == 20 and drift["nodes"] == ["site-1"]
    # It reached a group of concept 0 only (no baselines: no accuracy condition here).
    assert drift["recovered_seconds"]["site-1"] is not None
    # Nobody else had a reason to move, and nobody did.
    assert drift["others_moved"] == 0
    rows = {row["name"]: row for row in results["nodes"]}
    assert rows["site-1"]["concept"] == 0
    mates = [r for r in rows.values() if r["group"] == rows["site-1"]["group"]]
    assert len(mates) > 1 and {r["concept"] for r in mates} == {0}
    # Its group's model serves its new test split (the old concept's model would not: chance
    # is 0.1, and concept 1 permutes every label).
    assert rows["site-1"]["accuracy"] > 0.8
    assert results["purity"] == 1.0
    samples = results["timeline"]
    assert {"seconds", "mean_accuracy", "purity", "groups", "migrations"} <= set(samples[0])
    assert "seconds_to_target" in results


def test_late_arrivals_join_their_concepts_group_without_disturbing_it() -> None:
    datas = [digits(i, 8) for i in range(8)]
    config = NodeConfig.test().replace(group_capacity=5)
    cluster = LocalCluster(datas, config, registry=cluster_registry)
    cluster.start(count=6)
    try:
        wait_for(lambda: settled(cluster), timeout=60, what="two pure groups of three")
        # Group and moves read from one step of each node (a move in progress shows in its
        # group id before it counts as a move).
        before = {i: n.placement for i, n in cluster.live().items()}
        group_of_concept = {concept_of(n): n.group_id for n in cluster.live().values()}
        late = [cluster.add(6), cluster.add(7)]  # concepts 0 and 1
        for node in late:
            wait_for(
                lambda node=node: node.group_id == group_of_concept[concept_of(node)],
                timeout=40,
                what=f"{node.name} in the group of its concept",
            )
        wait_for(lambda: settled(cluster), timeout=20, what="the groups settled again")
        assert {i: cluster.by_index[i].placement for i in before} == before
    finally:
        cluster.stop()


def test_a_group_whose_leader_crashes_during_a_drift_keeps_its_model_and_takes_the_drifter() -> (
    None
):
    datas = [digits(i, 6) for i in range(6)]
    config = NodeConfig.test().replace(group_capacity=5)
    with LocalCluster(datas, config, registry=cluster_registry) as cluster:
        wait_for(lambda: settled(cluster), timeout=60, what="two pure groups of three")
        live = cluster.live()
        target = next(n for n in live.values() if concept_of(n) == 0).group_id
        assert target is not None
        leader = next(n for n in live.values() if n.group_id == target and n.phase is Phase.LEADER)
        drifter = next(n for n in live.values() if concept_of(n) == 1 and n.phase is Phase.MEMBER)
        stayers = [n for n in live.values() if concept_of(n) == 1 and n is not drifter]
        survivors = [n for n in live.values() if n.group_id == target and n is not leader]
        old = survivors[0].gossip.groups()[target]
        index = next(i for i, n in live.items() if n is drifter)
        drifter.switch_data(digits(index, 6, concept=0))  # concept 1 -> 0, same node
        cluster.crash(next(i for i, n in live.items() if n is leader))

        def recovered() -> bool:
            record = survivors[0].gossip.groups().get(target)
            return (
                drifter.group_id == target
                and all(n.group_id == target for n in survivors)
                and record is not None
                and record.term > old.term
                and record.round > old.round
                and (drifter.test_accuracy() or 0.0) > 0.8
            )

        wait_for(recovered, timeout=60, what="the drifter in the old group under a new leader")
        # Validation and test switched with the training data (the accuracy above is on its new
        # test split: a concept-1 model scores near chance there).
        assert drifter.data_summary()["concept"] == 0
        # The registry's summary of its data says so too (registration is idempotent per id).
        with RegistryClient(cluster.url) as registry:
            assert registry.node(drifter.id).data["concept"] == 0
        # The group went on from its model rather than from scratch (chance is 0.1).
        record = survivors[0].gossip.groups()[target]
        assert record.accuracy is not None and record.accuracy > 0.8
        # The drift's old group lost a member, not its place: its others end together, apart
        # from the target, and the survivors are in the target (checked above). Whether nobody
        # moves on the way is measured by the experiment's `others_moved`, not asserted here: on
        # a loaded machine a leader's found rule can fire on the noise of a smaller group and
        # the nodes re-merge (docs/experiments.md).
        assert len({n.group_id for n in stayers}) == 1 and stayers[0].group_id != target
