"""Attacks on a network run with ``--token``, replayed against the real parts.

A real registry over HTTP, real nodes (gossip over ZeroMQ, Flower over gRPC) training in a
group. The attacker holds the admission token (a member that turned hostile, a lost laptop) or
nothing at all (a stranger on the LAN). Every attack here succeeded on the code before nodes had
identities of their own; each test asserts it is refused now.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest

from bootstrap.server import cluster_registry
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.learning.flower import GroupServer, MemberClient
from mycelium_p2p.learning.models import build_model, get_weights
from mycelium_p2p.learning.tls import TlsMaterial
from mycelium_p2p.lifecycle import Phase
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.registry_client import RegistryClient, RegistryError
from mycelium_p2p.testing.local_cluster import LocalCluster
from tests.helpers import wait_for, wait_until

pytestmark = pytest.mark.slow

TOKEN = "identity-attack-token"


def _one_group(cluster: LocalCluster, size: int) -> Node:
    """The leader, once every node is in one group of ``size`` that has done a round."""

    def leader() -> Node | None:
        nodes = cluster.nodes
        if len(cluster.groups()) != 1 or not all(n.group_id for n in nodes):
            return None
        lead = next((n for n in nodes if n.phase is Phase.LEADER), None)
        if lead is None or len(cluster.groups()[lead.group_id or ""]) != size:
            return None
        record = lead.gossip.groups().get(lead.group_id or "")
        return lead if record is not None and record.round >= 1 else None

    return wait_for(leader, 120, what=f"one group of {size} with a leader and a round")


@pytest.fixture(scope="module")
def trio() -> Iterator[LocalCluster]:
    config = NodeConfig.test().replace(token=TOKEN, group_capacity=3)
    datas = [load_node_data("digits:iid", i, 3, seed=0) for i in range(3)]
    with LocalCluster(datas, config, registry=cluster_registry) as cluster:
        yield cluster


def _peers(url: str) -> list[str]:
    with RegistryClient(url, token=TOKEN, retries=0) as reader:
        return reader.peers(limit=100)


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except RegistryError as exc:
        return str(exc.status)
    return "accepted"


def test_the_admission_token_writes_for_nobody_but_a_new_node(trio: LocalCluster) -> None:
    leader = _one_group(trio, 3)
    gid = str(leader.group_id)
    members = [n for n in trio.nodes if n is not leader]
    victim = members[0]
    term = leader.term
    with RegistryClient(trio.url, token=TOKEN, retries=0) as attacker:
        before = attacker.group(gid)
        # Overwrite the victim's addresses: /peers would hand newcomers the attacker's.
        overwrite = _outcome(
            lambda: attacker.register(
                id=victim.id, name="mallory", gossip_address="10.66.66.66:7946", model=victim.spec
            )
        )
        handed = "10.66.66.66:7946" in _peers(trio.url)
        outcomes = {
            "register as another node": overwrite,
            "heartbeat as another node": _outcome(lambda: attacker.heartbeat(victim.id)),
            "report a group's figures without leading it": _outcome(
                lambda: attacker.report_performance(
                    gid,
                    node_id=leader.id,
                    term=term,
                    accuracy=1.0,
                    loss=0.0,
                    round=10**6,
                    examples=1,
                )
            ),
            "claim the lead for another member": _outcome(
                lambda: attacker.claim_leadership(
                    gid, node_id=victim.id, term=before.term + 1, flower_address="10.66.66.66:1"
                )
            ),
            "found a group in another node's name": _outcome(
                lambda: attacker.create_group(
                    name="forged",
                    leader=victim.id,
                    flower_address="10.66.66.66:8080",
                    model=victim.spec,
                )
            ),
            "make another node leave its group": _outcome(
                lambda: attacker.leave_group(node_id=members[1].id)
            ),
            "deregister another node": _outcome(lambda: attacker.deregister(victim.id)),
        }
    print(
        "admission token as an attacker:",
        outcomes,
        f"/peers hands the attacker's address: {handed}",
    )
    assert set(outcomes.values()) == {"403"}, outcomes
    assert not handed
    with RegistryClient(trio.url, token=TOKEN, retries=0) as reader:
        after = reader.group(gid)
        assert reader.node(victim.id).status == "alive"
    assert (after.leader, after.term, sorted(after.members)) == (
        before.leader,
        before.term,
        sorted(before.members),
    )
    assert after.metrics.round < 10**6


def test_a_stranger_reads_nothing(trio: LocalCluster) -> None:
    _one_group(trio, 3)
    reads = ["/nodes", "/groups", "/peers", "/network", "/events", f"/nodes/{trio.nodes[0].id}"]
    statuses = {}
    for token in (None, "not-the-token"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for path in reads:
            statuses[(token or "none", path)] = httpx.get(
                trio.url + path, headers=headers
            ).status_code
    shown = {f"{who} {path}": status for (who, path), status in statuses.items()}
    print("stranger reads:", shown)
    assert set(statuses.values()) == {401}, shown
    for path in ("/health", "/docs/openapi.json"):
        assert httpx.get(trio.url + path).status_code == 200


def _pinned_leaf(address: str) -> bytes:
    host, port = address.rsplit(":", 1)
    return ssl.get_server_certificate((host, int(port))).encode()


def test_a_stranger_with_the_leaders_pinned_certificate_gets_no_session(
    trio: LocalCluster,
) -> None:
    leader = _one_group(trio, 3)
    address = str(leader.server_address)
    pinned = _pinned_leaf(address)
    stranger = MemberClient(
        load_node_data("digits:iid", 0, 3, seed=1),
        leader.spec,
        local_epochs=1,
        seed=9,
        tls=TlsMaterial(ca_cert=pinned),
        connect_timeout=1.0,
    )
    try:
        stranger.connect(address)
        start = wait_for(lambda: leader.latest_round, 30, what="a round").round
        wait_for(
            lambda: (r := leader.latest_round) is not None and r.round >= start + 3,
            60,
            what="three more rounds while the stranger knocks",
        )
        print(f"pinned stranger: {stranger.sessions} sessions, {stranger.fits} fits")
        assert stranger.sessions == 0 and stranger.fits == 0 and stranger.last_round == 0
    finally:
        stranger.close()


# --- gossip: a group record naming a leader the registry never granted --------------------


def _hostile(cluster: LocalCluster, leader: Node, tmp: Any) -> tuple[Any, TlsMaterial, Any]:
    """A node of the attacker's own, enrolled with the admission token like any newcomer: its
    gossip, the TLS material of its Flower server, and how to stop it."""
    from mycelium_p2p.node_config import SECTION_OF

    if "state_dir" not in SECTION_OF:  # the code before identities: the token is everything
        from mycelium_p2p.config import GossipConfig
        from mycelium_p2p.gossip import GossipNode

        gossip = GossipNode("mallory", GossipConfig.test(), meta={"name": "mallory"}, secret=TOKEN)
        gossip.start()
        gossip.join([leader.gossip.address], 5.0)
        return gossip, TlsMaterial.for_server(TOKEN, "127.0.0.1"), gossip.stop
    config = NodeConfig.test().replace(
        token=TOKEN, registry_url=cluster.url, name="mallory", state_dir=str(tmp)
    )
    node = Node(config, data=load_node_data("digits:iid", 2, 3, seed=0), node_id="mallory")
    node.start()
    wait_for(
        lambda: node.identity is not None and node.identity.certificate is not None,
        30,
        what="the hostile node enrolled",
    )
    tls = node.learning.server_tls()
    assert tls is not None
    return node.gossip, tls, node.stop


def _zeros_server(spec: str, tls: TlsMaterial) -> GroupServer:
    """A Flower server that hands out an all-zeros model and never learns."""
    zeros = [np.zeros_like(w) for w in get_weights(build_model(spec, seed=0))]
    server = GroupServer(zeros, strategy="median", tls=tls, pause=0.2, round_timeout=5.0)
    server._strategy.aggregate_fit = lambda rnd, results, failures: (None, {})  # type: ignore[method-assign]
    return server


def test_a_forged_group_record_moves_no_member(tmp_path: Any) -> None:
    config = NodeConfig.test().replace(token=TOKEN, group_capacity=2)
    datas = [load_node_data("digits:iid", i, 3, seed=0) for i in range(2)]
    with LocalCluster(datas, config, registry=cluster_registry) as cluster:
        leader = _one_group(cluster, 2)
        member = next(n for n in cluster.nodes if n is not leader)
        gid = str(leader.group_id)
        gossip, tls, stop = _hostile(cluster, leader, tmp_path / "mallory")
        server = _zeros_server(leader.spec, tls)
        try:
            wait_for(
                lambda: any(m.id == "mallory" for m in leader.gossip.members()),
                30,
                what="the hostile node in gossip",
            )
            address = server.start()
            real = leader.gossip.groups()[gid]
            forged = replace(
                real,
                leader="mallory",
                leader_address=gossip.address,
                flower_address=address,
                term=real.term + 1,
                version=1,
            )
            # Straight onto the wire, past any check of the attacker's own node.
            gossip._node().call(lambda core, now: core.broadcast(("g", gid), forged))
            wait_until(lambda: server.round >= 3 or member.term > real.term, 20)
            followed = member.gossip.groups().get(gid)
            clients = server.results[-1].clients if server.results else 0
            print(
                f"forged record: member sees leader {followed.leader if followed else None} "
                f"term {followed.term if followed else None}, following "
                f"{member.learning.client.address}; the forger's server ran {server.round} "
                f"rounds with {clients} clients"
            )
            assert followed is not None and followed.leader == leader.id
            assert followed.term == real.term
            assert server.round == 0
            # Refused for its lease (the real one, for another term and leader), not unseen.
            refused = [n.gossip.stats().get("records_refused", 0) for n in cluster.nodes]
            print(f"records refused per node: {refused}")
            assert sum(refused) >= 1
        finally:
            server.stop()
            stop()
