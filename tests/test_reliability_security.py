"""The network secret end to end: a stranger can join nothing of a network run with a token.

A real network (registry over HTTP with ``--token``, gossip over CURVE, Flower over TLS) trains;
a stranger without the secret (or with a wrong one) tries gossip, the registry and Flower.
"""

from __future__ import annotations

import pytest

from bootstrap.server import CLUSTER_ADMIN_TOKEN, cluster_registry
from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipNode
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.learning.flower import MemberClient
from mycelium_p2p.learning.tls import TlsMaterial
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.registry_client import RegistryClient, RegistryError
from mycelium_p2p.testing.local_cluster import LocalCluster
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

SECRET = "reliability-test-secret"


def test_a_stranger_can_neither_gossip_nor_write_nor_train() -> None:
    config = NodeConfig.test().replace(token=SECRET, group_capacity=3)
    datas = [load_node_data("digits:iid", i, 3, seed=0) for i in range(3)]
    with LocalCluster(datas[:2], config, registry=cluster_registry) as cluster:
        nodes = cluster.nodes
        leader = wait_for(
            lambda: (
                next((n for n in nodes if n.phase is Phase.LEADER), None)
                if all(n.group_id for n in nodes) and len(cluster.groups()) == 1
                else None
            ),
            60,
            what="one group of two with a leader",
        )
        gid = leader.group_id
        wait_for(lambda: (r := leader.gossip.groups().get(gid)) and r.round >= 2, 60, what="rounds")

        # --- gossip: no answer without the secret, nor with a wrong one -----------------------
        refused = 0
        for secret in (None, "not-the-secret"):
            stranger = GossipNode(
                f"stranger{refused}",
                GossipConfig.test(),
                meta={"name": "stranger", "role": "observer"},
                observer=True,
                secret=secret,
            )
            stranger.start()
            try:
                assert not stranger.join([leader.gossip.address], timeout=3.0)
                assert [m.id for m in stranger.members()] == [stranger.node_id]
                assert stranger.groups() == {}
                refused += 1
            finally:
                stranger.stop()
        assert all(not any(m.id.startswith("stranger") for m in n.gossip.members()) for n in nodes)

        # --- registry: writes and reads need a credential (401) ----------------------------------
        statuses = []
        for token in (None, "not-the-secret"):
            with RegistryClient(cluster.url, token=token, retries=0) as client:
                with pytest.raises(RegistryError) as read:
                    client.groups()
                statuses.append(read.value.status)
                for write in (
                    lambda c: c.register(
                        id="stranger", name="s", gossip_address="127.0.0.1:9", model="x:1:2"
                    ),
                    lambda c: c.join_group(node_id=nodes[0].id, group_id=gid),
                    lambda c: c.leave_group(node_id=nodes[0].id),
                ):
                    with pytest.raises(RegistryError) as err:
                        write(client)
                    statuses.append(err.value.status)
        assert set(statuses) == {401}
        with RegistryClient(cluster.url, token=CLUSTER_ADMIN_TOKEN, retries=0) as client:
            assert {n.id for n in client.nodes()} == {n.id for n in nodes}
            assert set(client.group(gid).members) == {n.id for n in nodes}

        # --- Flower: a plaintext client and one with a wrong CA never take part -------------------
        address = leader.server_address
        assert address is not None
        strangers = [
            MemberClient(datas[2], leader.spec, seed=5, local_epochs=1),
            MemberClient(
                datas[2], leader.spec, seed=6, local_epochs=1, tls=TlsMaterial.for_member("x")
            ),
        ]
        try:
            for client in strangers:
                client.connect(address)
            start = leader.gossip.groups()[gid].round
            wait_for(
                lambda: (r := leader.gossip.groups().get(gid)) and r.round >= start + 3,
                60,
                what="three more rounds while strangers knock",
            )
            assert all(c.sessions == 0 and c.fits == 0 and c.last_round == 0 for c in strangers)
            assert leader.learning.server_clients() == len(nodes)
        finally:
            for client in strangers:
                client.close()
        print(
            f"security: {refused} gossip strangers unanswered, registry writes {len(statuses)}x "
            f"{sorted(set(statuses))}, 2 Flower strangers 0 sessions over 3 rounds"
        )
