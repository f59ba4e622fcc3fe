"""Gossip where every node speaks as itself: real ZeroMQ sockets, tickets from a real CA.

Each node's ROUTER is a CURVE server with its own key; a peer is reached with the key of its
ticket, learned from gossip metadata or its introduction listener. A frame's sender id must be
the node its connection authenticated as.
"""

from __future__ import annotations

import time

import pytest
import zmq

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipNode
from mycelium_p2p.gossip.codec import Codec
from mycelium_p2p.gossip.messages import Gossip, Kind, Message
from mycelium_p2p.identity import CertificateAuthority, NodeIdentity, to_text
from tests.helpers import wait_until

CFG = GossipConfig.test()


def enrolled(ca: CertificateAuthority, node_id: str) -> NodeIdentity:
    """An identity as a registry would enrol it (ticket and CA certificate, no credential)."""
    identity = NodeIdentity(node_id)
    ticket = ca.issue_ticket(node_id, identity.keys.curve_public)
    identity.accept(ca.cert_pem, ticket.text())
    return identity


def _start(made: list[GossipNode], node: GossipNode) -> GossipNode:
    node.start()
    made.append(node)
    return node


def _live(node: GossipNode) -> set[str]:
    return {m.id for m in node.members() if m.status == "alive"}


def test_enrolled_nodes_find_each_other_through_introductions(nodes: list[GossipNode]) -> None:
    ca = CertificateAuthority.create()
    seed = _start(
        nodes,
        GossipNode("a", CFG, identity=enrolled(ca, "a"), registry_url="http://registry:1"),
    )
    for name in ("b", "c"):
        node = _start(nodes, GossipNode(name, CFG, identity=enrolled(ca, name)))
        assert node.join([seed.address], 5.0)
    assert wait_until(lambda: all(_live(n) == {"a", "b", "c"} for n in nodes), 15)
    # The introduction told the newcomers where the registry is.
    assert nodes[1].registry_url == "http://registry:1"


def test_a_stranger_and_a_spoofed_sender_are_dropped(nodes: list[GossipNode]) -> None:
    ca, other_ca = CertificateAuthority.create(), CertificateAuthority.create()
    a = _start(nodes, GossipNode("a", CFG, identity=enrolled(ca, "a")))
    b = _start(nodes, GossipNode("b", CFG, identity=enrolled(ca, "b")))
    assert b.join([a.address], 5.0)
    assert wait_until(lambda: _live(a) == {"a", "b"}, 10)

    # A node of another network (its own CA) is never spoken to and gets nothing in.
    stranger = _start(nodes, GossipNode("s", CFG, identity=enrolled(other_ca, "s")))
    assert not stranger.join([a.address], 2.0)
    # "b", holding a valid ticket, sends a frame that claims to be "c".
    codec = Codec(CFG.max_frame_bytes, CFG.max_model_bytes, CFG.max_meta_bytes)
    forged = codec.encode(Message(Kind.GOSSIP, "c", "127.0.0.1:9", Gossip(())))
    b_transport = b._node().transport
    b._node().call(lambda core, now: b_transport.send(a.address, forged))
    assert wait_until(lambda: a.stats().get("drops", {}).get("spoofed", 0) >= 1, 10), a.stats()
    assert _live(a) == {"a", "b"}


def test_a_raw_client_without_a_ticket_is_not_heard(nodes: list[GossipNode]) -> None:
    ca = CertificateAuthority.create()
    a = _start(nodes, GossipNode("a", CFG, identity=enrolled(ca, "a")))
    identity = a.identity
    assert identity is not None
    codec = Codec(CFG.max_frame_bytes, CFG.max_model_bytes, CFG.max_meta_bytes)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey = identity.keys.curve_public
    sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.connect(f"tcp://{a.address}")
    try:
        for _ in range(5):
            sock.send(codec.encode(Message(Kind.GOSSIP, "m", "127.0.0.1:9", Gossip(()))))
        transport = a._node().transport
        assert wait_until(lambda: transport.stats().get("unauthenticated", 0) >= 1, 10)
        assert a.stats()["frames_in"] == 0
    finally:
        sock.close(0)


@pytest.mark.slow
def test_a_revocation_list_reaches_every_node_by_gossip(nodes: list[GossipNode]) -> None:
    """One node learns the signed list (as from the registry); gossip carries it to the others,
    which then refuse the revoked node's frames and declare it dead. The time is printed."""
    ca = CertificateAuthority.create()
    names = [f"n{i}" for i in range(6)]
    seed = _start(nodes, GossipNode(names[0], CFG, identity=enrolled(ca, names[0])))
    for name in names[1:]:
        node = _start(nodes, GossipNode(name, CFG, identity=enrolled(ca, name)))
        assert node.join([seed.address], 5.0)
    assert wait_until(lambda: all(_live(n) == set(names) for n in nodes), 20)
    revoked, others = nodes[-1], nodes[:-1]

    listed = ca.sign_revocations(1, [revoked.node_id])
    start = time.monotonic()
    assert others[0].install_revocations(to_text(listed.raw))

    def refused_everywhere() -> bool:
        return all(
            n.identity is not None
            and n.identity.trust is not None
            and n.identity.trust.revoked(revoked.node_id)
            and revoked.node_id not in _live(n)
            for n in others
        )

    assert wait_until(refused_everywhere, 20), [sorted(_live(n)) for n in others]
    took = time.monotonic() - start
    print(f"revocation by gossip: {len(others)} nodes refuse {revoked.node_id} after {took:.2f}s")
    # A list not signed by the network's CA changes nothing.
    other = CertificateAuthority.create().sign_revocations(2, [seed.node_id])
    assert not others[1].install_revocations(to_text(other.raw))
    assert seed.node_id in _live(others[1])
    # The revoked node's frames are dropped from now on (its ticket no longer verifies).
    transport = others[0]._node().transport
    before = transport.stats().get("unauthenticated", 0)
    assert wait_until(lambda: transport.stats().get("unauthenticated", 0) > before, 20)
