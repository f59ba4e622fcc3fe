"""A registry and four ``mycelium join`` processes on loopback, all started through the CLI."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipNode
from mycelium_p2p.registry_client import RegistryClient
from mycelium_p2p.testing.processes import ProcessGroup, mycelium_command
from tests.helpers import RegistryProcess, wait_for

pytestmark = pytest.mark.slow


def registry_groups(client: RegistryClient) -> dict[str, set[str]]:
    return {g.id: set(g.members) for g in client.groups()}


def leaders(client: RegistryClient) -> set[str]:
    return {g.leader for g in client.groups() if g.leader}


def process_of(
    nodes: ProcessGroup, client: RegistryClient, node_id: str
) -> subprocess.Popen[bytes]:
    name = next(n.name for n in client.nodes() if n.id == node_id)
    return nodes.processes[nodes.names.index(name)]


def gossip_view_of(address: str) -> dict[str, set[str]]:
    """The group table of the node at ``address``: one push-pull with it, as an observer."""
    observer = GossipNode("observer-test", GossipConfig.test(), observer=True)
    observer.start()
    try:
        if not observer.join([address], timeout=3.0):
            return {}
        return {gid: set(r.members) for gid, r in observer.groups().items()}
    finally:
        observer.stop()


def test_four_node_processes_form_groups_train_and_leave(tmp_path: Path) -> None:
    registry = RegistryProcess(
        tmp_path / "registry.db", extra=("--suspect-after", "3", "--dead-after", "6")
    )
    nodes = ProcessGroup(log_dir=tmp_path / "logs")
    client = RegistryClient(registry.url)
    try:
        for index in range(4):
            nodes.start(
                f"node-{index}",
                mycelium_command(
                    "join",
                    *("--bootstrap", registry.url, "--preset", "test", "--capacity", "3"),
                    *("--data", "digits:iid", "--node-index", str(index), "--num-nodes", "4"),
                    *("--name", f"node-{index}"),
                ),
            )
        # Every node in a group, capacity respected (4 nodes, capacity 3: at least two groups).
        wait_for(
            lambda: sum(len(m) for m in registry_groups(client).values()) == 4,
            timeout=120,
            what="four nodes in groups",
        )
        groups = registry_groups(client)
        assert len(groups) >= 2 and all(len(m) <= 3 for m in groups.values())

        # Rounds advance and accuracy on digits iid rises well above chance.
        def trained() -> bool:
            listed = client.groups()
            return bool(listed) and all(
                g.metrics.round >= 3 and (g.metrics.accuracy or 0) > 0.6 for g in listed
            )

        wait_for(trained, timeout=120, what="three rounds above 0.6 accuracy in every group")

        # The registry and every node's gossip view agree on who is in which group.
        addresses = {n.id: n.gossip_address for n in client.nodes() if n.status == "alive"}
        assert len(addresses) == 4

        def agree() -> bool:
            truth = registry_groups(client)
            return all(gossip_view_of(a) == truth for a in addresses.values())

        wait_for(agree, timeout=30, interval=1.0, what="every gossip view equal to the registry")

        # SIGTERM to a member: out of its group in the registry and in gossip within seconds.
        members = sorted(n.id for n in client.nodes() if n.group)
        leaving_id = next(m for m in members if m not in leaders(client))
        leaving = process_of(nodes, client, leaving_id)
        started = time.monotonic()
        leaving.send_signal(signal.SIGTERM)
        wait_for(
            lambda: all(leaving_id not in m for m in registry_groups(client).values()),
            timeout=10,
            what="the SIGTERMed member out of its group in the registry",
        )
        survivor = next(a for i, a in addresses.items() if i != leaving_id)
        wait_for(
            lambda: all(leaving_id not in m for m in gossip_view_of(survivor).values()),
            timeout=10,
            interval=0.5,
            what="the SIGTERMed member out of its group in gossip",
        )
        print(f"graceful leave visible everywhere after {time.monotonic() - started:.1f}s")
        assert leaving.wait(timeout=30) == 0  # bounded steps; slow on a loaded machine

        # SIGKILL to another member: its group keeps training, liveness removes it.
        remaining = [
            n for n in client.nodes() if n.status == "alive" and n.id not in leaders(client)
        ]
        assert remaining, "a member should remain to be killed"
        victim = remaining[0]
        group_id = victim.group
        before = client.group(group_id).metrics.round
        process_of(nodes, client, victim.id).kill()
        started = time.monotonic()
        wait_for(
            lambda: victim.id not in client.group(group_id).members,
            timeout=30,
            what="the SIGKILLed member dropped by liveness",
        )
        print(f"killed member dropped after {time.monotonic() - started:.1f}s")
        wait_for(
            lambda: client.group(group_id).metrics.round >= before + 3,
            timeout=30,
            what="three more rounds without the killed member",
        )
    finally:
        client.close()
        nodes.stop(grace=10)
        registry.stop()
    assert not nodes.alive()
