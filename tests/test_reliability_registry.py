"""The registry process is SIGKILLed under a training network, then restarted on the same file.

Nodes run in-process (real gossip, Flower and HTTP); the registry is a ``mycelium bootstrap``
child so that the kill is real. While it is down, groups keep training and a newcomer's attempt
to found a group waits and retries; after the restart nothing acknowledged is missing and the
registry and the nodes' gossip views agree again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.learning.train import limit_threads
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.registry_client import RegistryClient
from tests.helpers import wait_for
from tests.reliability_support import (
    Processes,
    registry_groups,
    registry_nodes,
    start_registry,
    stop_nodes,
)

pytestmark = pytest.mark.slow

NODES = 4


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    stop_nodes(started)


def events(url: str) -> list[dict]:
    with RegistryClient(url, retries=0, timeout=3.0) as client:
        return msgspec.to_builtins(client.events(after=0, limit=1000))  # type: ignore[no-any-return]


def membership(groups: dict[str, dict]) -> dict[str, tuple]:
    return {gid: (g["leader"], g["term"], frozenset(g["members"])) for gid, g in groups.items()}


def test_registry_sigkill_and_restart_on_the_same_file(
    procs: Processes, nodes: list[Node], tmp_path: Path
) -> None:
    limit_threads()
    db = tmp_path / "registry.db"
    registry, url = start_registry(procs, db, dead_after=6.0)
    port = url.rsplit(":", 1)[1]
    config = NodeConfig.test().replace(registry_url=url, group_capacity=2)
    datas = [load_node_data("digits:iid", i, NODES + 1, seed=0) for i in range(NODES + 1)]
    for i in range(NODES):
        node = Node(config.replace(name=f"r{i}", node_index=i), datas[i], node_id=f"r{i}")
        node.start()
        nodes.append(node)

    def settled() -> bool:
        groups = registry_groups(url)
        if len(groups) != 2 or any(n.group_id not in groups for n in nodes):
            return False
        truth = {gid: set(g["members"]) for gid, g in groups.items()}
        return all(
            {gid: set(r.members) for gid, r in n.gossip.groups().items()} == truth
            and r_round(n) >= 2
            for n in nodes
        )

    def r_round(node: Node) -> int:
        record = node.gossip.groups().get(node.group_id or "")
        return record.round if record else 0

    wait_for(settled, 120, interval=0.5, what="two groups of two, training, views agreeing")
    acknowledged_groups = membership(registry_groups(url))
    acknowledged_nodes = set(registry_nodes(url))
    acknowledged_events = {e["id"]: e for e in events(url)}

    # --- the registry dies ------------------------------------------------------------------
    registry.kill()
    killed = time.monotonic()
    rounds_at_kill = {n.group_id: r_round(n) for n in nodes}
    newcomer = Node(
        config.replace(name="late", node_index=NODES, peers=(nodes[0].gossip.address,)),
        datas[NODES],
        node_id="late",
    )
    newcomer.start()
    nodes.append(newcomer)
    # Training goes on: every group does two more rounds with no registry.
    wait_for(
        lambda: all(r_round(n) >= rounds_at_kill[n.group_id] + 2 for n in nodes[:NODES]),
        60,
        what="two more rounds in every group while the registry is down",
    )
    t_rounds = time.monotonic() - killed
    # The newcomer got into gossip through a peer, tried to found a group, failed, tried again.
    wait_for(lambda: len(newcomer.decisions) >= 2, 30, what="the newcomer's second attempt")
    assert newcomer.group_id is None
    assert "late" in {m.id for m in nodes[0].gossip.members()}
    assert all(n.group_id is not None for n in nodes[:NODES])
    down_for = time.monotonic() - killed
    attempts = len(newcomer.decisions)

    # --- restart on the same file and port --------------------------------------------------
    restarted, url2 = start_registry(procs, db, port=int(port), dead_after=6.0)
    assert url2 == url
    restarted_at = time.monotonic()
    # Every acknowledged write is there: groups (leader, term, members), nodes, the event log.
    after = membership(registry_groups(url))
    for gid, state in acknowledged_groups.items():
        assert after.get(gid) == state, f"group {gid}: {state} before, {after.get(gid)} after"
    assert acknowledged_nodes <= set(registry_nodes(url))
    logged = {e["id"]: e for e in events(url)}
    assert all(logged.get(i) == e for i, e in acknowledged_events.items())

    # The waiting newcomer gets in, and the registry and every gossip view agree again.
    def reconciled() -> bool:
        groups = registry_groups(url)
        live = {n.id for n in nodes}
        truth = {gid: set(g["members"]) for gid, g in groups.items()}
        if newcomer.group_id is None or any(n.group_id not in truth for n in nodes):
            return False
        phantoms = set().union(*truth.values()) - live
        if phantoms:
            return False
        return all(
            {gid: set(r.members) for gid, r in n.gossip.groups().items()} == truth for n in nodes
        )

    wait_for(reconciled, 60, interval=0.5, what="registry and gossip reconciled")
    t_reconciled = time.monotonic() - restarted_at
    final = registry_groups(url)
    for gid in acknowledged_groups:
        assert gid in final, f"group {gid} lost after reconciliation"
    print(
        f"registry SIGKILL: down {down_for:.1f}s, newcomer tried {attempts} times, two rounds "
        f"per group in {t_rounds:.1f}s without it, {len(acknowledged_events)} acknowledged "
        f"events and {len(acknowledged_groups)} groups all present after restart, reconciled "
        f"{t_reconciled:.1f}s after restart (newcomer in {newcomer.group_id}), "
        f"groups now {len(final)}"
    )
    restarted.terminate()
