"""Garbage from a raw ZeroMQ socket: the node keeps running, counts it, its state is unchanged."""

from __future__ import annotations

import random
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipNode
from mycelium_p2p.gossip.codec import Codec
from mycelium_p2p.gossip.messages import PROTOCOL_VERSION, Gossip, Kind, Message
from mycelium_p2p.groups import GroupRecord
from tests.helpers import wait_until


@pytest.fixture
def pair() -> Iterator[tuple[GossipNode, GossipNode]]:
    config = GossipConfig.test()
    target = GossipNode("target", config, meta={"name": "target"})
    peer = GossipNode("peer", config, meta={"name": "peer"})
    target.start()
    peer.start()
    assert peer.join([target.address or ""], timeout=5.0)
    yield target, peer
    peer.stop()
    target.stop()


def state(node: GossipNode) -> tuple:
    return (
        sorted((m.id, m.status, m.incarnation) for m in node.members()),
        sorted((g.id, g.term, g.version) for g in node.groups().values()),
    )


def test_random_truncated_oversize_and_replayed_frames(pair: tuple[GossipNode, GossipNode]) -> None:
    target, peer = pair
    record = GroupRecord("g-1", leader="peer", members=("peer",), term=1, version=2)
    assert peer.publish_group(record)
    assert wait_until(lambda: "g-1" in target.groups(), timeout=10)
    config = GossipConfig.test()
    codec = Codec(config.max_frame_bytes, config.max_model_bytes, config.max_meta_bytes)
    valid = codec.encode(Message(Kind.GOSSIP, "peer", peer.address or "", Gossip((record,))))
    stale = codec.encode(
        Message(
            Kind.GOSSIP,
            "peer",
            peer.address or "",
            Gossip((GroupRecord("g-1", term=1, version=1),)),
        )
    )
    rng = random.Random(7)
    frames = [
        *(rng.randbytes(rng.randrange(1, 300)) for _ in range(50)),  # random
        *(valid[: rng.randrange(1, len(valid))] for _ in range(20)),  # truncated
        msgpack.packb([PROTOCOL_VERSION, 99, "x", "1.2.3.4:5", {}]),  # unknown kind
        msgpack.packb([PROTOCOL_VERSION + 7, int(Kind.PING), "x", "1.2.3.4:5", {}]),  # version
        msgpack.packb(  # well-formed but over the gossip frame cap
            [
                PROTOCOL_VERSION,
                int(Kind.GOSSIP),
                "x",
                "1.2.3.4:5",
                {"u": "a" * config.max_frame_bytes},
            ]
        ),
        valid,  # replayed: same (term, version), changes nothing
        stale,  # replayed older version: must not roll the record back
    ]
    before_state = state(target)
    before_drops = sum(target.stats()["drops"].values())
    context = zmq.Context.instance()
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"tcp://{target.address}")
    try:
        for frame in frames:
            raw.send(frame)
        expected_drops = len(frames) - 2  # the two replays decode fine and are ignored
        assert wait_until(
            lambda: sum(target.stats()["drops"].values()) - before_drops >= expected_drops,
            timeout=10,
        ), target.stats()["drops"]
    finally:
        raw.close(0)
    drops = target.stats()["drops"]
    assert drops.get("malformed", 0) > 0 and drops.get("oversize", 0) > 0
    assert drops.get("unknown_kind", 0) >= 1 and drops.get("bad_version", 0) >= 1
    assert state(target) == before_state
    assert target.groups()["g-1"].version == 2
    # Still alive and answering: a new member can join through it.
    late = GossipNode("late", GossipConfig.test())
    late.start()
    try:
        assert late.join([target.address or ""], timeout=5.0)
        assert "g-1" in late.groups()
    finally:
        late.stop()
