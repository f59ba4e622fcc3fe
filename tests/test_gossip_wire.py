"""The bytes on the wire, fixed: frames of every kind as the encoder wrote them before the gossip
package existed (protocol version 1). A change here is a protocol change: never edit a frame,
add a new kind instead."""

from __future__ import annotations

import random

import pytest

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip.codec import Codec
from mycelium_p2p.gossip.core import GossipCore
from mycelium_p2p.gossip.messages import (
    MESSAGES,
    Ack,
    Gossip,
    Join,
    Kind,
    Leave,
    MemberUpdate,
    Message,
    ModelRequest,
    ModelResponse,
    Ping,
    PingReq,
    PushPull,
    Status,
)
from mycelium_p2p.groups import GroupDelegate, GroupRecord

CFG = GossipConfig.test()

# Captured from the encoder of the commit before the gossip package (mycelium_p2p/wire.py).
EXPECTED = {
    "ping": (
        "950102a26e30ae3132372e302e302e313a3730303083a17111a174a26e31a1759287a174a16da169a26e31a1"
        "61ae3132372e302e302e313a37303031a17301a16e05a16d8aa46e616d65a26e31a4726f6c65a46e6f6465a5"
        "67726f7570a3672d31a56d6f64656cac6d6c703a31783878383a3130ae666c6f7765725f61646472657373a0"
        "a86163637572616379cb3fe8000000000000a5726f756e6403a5747261696e0aa376616cc0a26f6bc3a162a2"
        "6e32de0012a26964a3672d31a46e616d65a6646967697473a66c6561646572a26e31ae6c65616465725f6164"
        "6472657373ae3132372e302e302e313a37303031ae666c6f7765725f61646472657373ae3132372e302e302e"
        "313a39303030a76d656d6265727392a26e31a26e32a56d6f64656cac6d6c703a31783878383a3130a8636170"
        "616369747905a86163637572616379cb3fe0000000000000a46c6f7373cb3ff4000000000000a5726f756e64"
        "07a86578616d706c657378a47465726d02a776657273696f6e03a9646973736f6c766564c2aa757064617465"
        "645f6174cb41d954fc40200000aa637265617465645f6174cb41d92ed6a0000000a174a167"
    ),
    "ping_bare": "950102a26e30ae3132372e302e302e313a3730303083a17101a174a26e31a17590",
    "ping_req": (
        "950103a26e30ae3132372e302e302e313a3730303084a17112a174a26e33a161ad31302e302e302e333a3739"
        "3436a1759187a174a16da169a26e33a161ad31302e302e302e333a37393436a17300a16e00a16d80a162a0"
    ),
    "ack": (
        "950104a26e30ae3132372e302e302e313a3730303082a17111a17592de0012a26964a3672d32a46e616d65a0"
        "a66c6561646572a26e33ae6c65616465725f61646472657373a0ae666c6f7765725f61646472657373a0a76d"
        "656d6265727390a56d6f64656ca0a8636170616369747900a86163637572616379cb0000000000000000a46c"
        "6f7373cb0000000000000000a5726f756e6400a86578616d706c657300a47465726d01a776657273696f6e09"
        "a9646973736f6c766564c3aa757064617465645f6174cb0000000000000000aa637265617465645f6174cb00"
        "00000000000000a174a16787a174a16da169a26e33a161ad31302e302e302e333a37393436a17300a16e00a1"
        "6d80a162a0"
    ),
    "gossip": (
        "950106a26e30ae3132372e302e302e313a3730303081a1759487a174a16da169a26e31a161ae3132372e302e"
        "302e313a37303031a17301a16e05a16d8aa46e616d65a26e31a4726f6c65a46e6f6465a567726f7570a3672d"
        "31a56d6f64656cac6d6c703a31783878383a3130ae666c6f7765725f61646472657373a0a861636375726163"
        "79cb3fe8000000000000a5726f756e6403a5747261696e0aa376616cc0a26f6bc3a162a26e3287a174a16da1"
        "69a26e33a161ad31302e302e302e333a37393436a17300a16e00a16d80a162a0de0012a26964a3672d31a46e"
        "616d65a6646967697473a66c6561646572a26e31ae6c65616465725f61646472657373ae3132372e302e302e"
        "313a37303031ae666c6f7765725f61646472657373ae3132372e302e302e313a39303030a76d656d62657273"
        "92a26e31a26e32a56d6f64656cac6d6c703a31783878383a3130a8636170616369747905a861636375726163"
        "79cb3fe0000000000000a46c6f7373cb3ff4000000000000a5726f756e6407a86578616d706c657378a47465"
        "726d02a776657273696f6e03a9646973736f6c766564c2aa757064617465645f6174cb41d954fc40200000aa"
        "637265617465645f6174cb41d92ed6a0000000a174a167de0012a26964a3672d32a46e616d65a0a66c656164"
        "6572a26e33ae6c65616465725f61646472657373a0ae666c6f7765725f61646472657373a0a76d656d626572"
        "7390a56d6f64656ca0a8636170616369747900a86163637572616379cb0000000000000000a46c6f7373cb00"
        "00000000000000a5726f756e6400a86578616d706c657300a47465726d01a776657273696f6e09a964697373"
        "6f6c766564c3aa757064617465645f6174cb0000000000000000aa637265617465645f6174cb000000000000"
        "0000a174a167"
    ),
    "join": (
        "950101a26e30ae3132372e302e302e313a3730303084a172c3a16d9287a174a16da169a26e31a161ae313237"
        "2e302e302e313a37303031a17301a16e05a16d8aa46e616d65a26e31a4726f6c65a46e6f6465a567726f7570"
        "a3672d31a56d6f64656cac6d6c703a31783878383a3130ae666c6f7765725f61646472657373a0a861636375"
        "72616379cb3fe8000000000000a5726f756e6403a5747261696e0aa376616cc0a26f6bc3a162a26e3287a174"
        "a16da169a26e33a161ad31302e302e302e333a37393436a17300a16e00a16d80a162a0a16792de0011a26964"
        "a3672d31a46e616d65a6646967697473a66c6561646572a26e31ae6c65616465725f61646472657373ae3132"
        "372e302e302e313a37303031ae666c6f7765725f61646472657373ae3132372e302e302e313a39303030a76d"
        "656d6265727392a26e31a26e32a56d6f64656cac6d6c703a31783878383a3130a8636170616369747905a861"
        "63637572616379cb3fe0000000000000a46c6f7373cb3ff4000000000000a5726f756e6407a86578616d706c"
        "657378a47465726d02a776657273696f6e03a9646973736f6c766564c2aa757064617465645f6174cb41d954"
        "fc40200000aa637265617465645f6174cb41d92ed6a0000000de0011a26964a3672d32a46e616d65a0a66c65"
        "61646572a26e33ae6c65616465725f61646472657373a0ae666c6f7765725f61646472657373a0a76d656d62"
        "65727390a56d6f64656ca0a8636170616369747900a86163637572616379cb0000000000000000a46c6f7373"
        "cb0000000000000000a5726f756e6400a86578616d706c657300a47465726d01a776657273696f6e09a96469"
        "73736f6c766564c3aa757064617465645f6174cb0000000000000000aa637265617465645f6174cb00000000"
        "00000000a375726caf687474703a2f2f7265673a38303830"
    ),
    "push_pull": (
        "950105a26e30ae3132372e302e302e313a3730303084a172c2a16d9187a174a16da169a26e33a161ad31302e"
        "302e302e333a37393436a17300a16e00a16d80a162a0a16790a375726cc0"
    ),
    "leave": "950107a26e30ae3132372e302e302e313a3730303081a16e04",
    "model_request": "950108a26e30ae3132372e302e302e313a3730303082a17102a167a3672d31",
    "model_response": (
        "950109a26e30ae3132372e302e302e313a3730303085a17102a167a3672d31a166c3a17207a170c409007765"
        "6967687473ff"
    ),
    "model_response_none": (
        "950109a26e30ae3132372e302e302e313a3730303085a17103a167a3672d39a166c2a17200a170c400"
    ),
}
EXPECTED_CORE = {
    "core_join": (
        "950101a26e30ae3132372e302e302e313a3730303084a172c3a16d9287a174a16da169a26e30a161ae313237"
        "2e302e302e313a37303030a17300a16e00a16d83a46e616d65a47a65726fa567726f7570a3672d31a4726f6c"
        "65a46e6f6465a162a087a174a16da169a26e33a161ad31302e302e302e333a37393436a17300a16e00a16d80"
        "a162a0a16791de0011a26964a3672d31a46e616d65a0a66c6561646572a26e30ae6c65616465725f61646472"
        "657373ae3132372e302e302e313a37303030ae666c6f7765725f61646472657373a0a76d656d6265727392a2"
        "6e30a26e31a56d6f64656ca0a8636170616369747900a86163637572616379cb0000000000000000a46c6f73"
        "73cb0000000000000000a5726f756e6400a86578616d706c657300a47465726d01a776657273696f6e01a964"
        "6973736f6c766564c2aa757064617465645f6174cb0000000000000000aa637265617465645f6174cb000000"
        "0000000000a375726caf687474703a2f2f7265673a38303830"
    ),
    "core_leave": "950107a26e30ae3132372e302e302e313a3730303081a16e01",
}

META = {"name": "n1", "role": "node", "group": "g-1", "model": "mlp:1x8x8:10",
        "flower_address": "", "accuracy": 0.75, "round": 3, "train": 10, "val": None,
        "ok": True}  # fmt: skip
MU = MemberUpdate("n1", "127.0.0.1:7001", Status.SUSPECT, 5, META, "n2")
MU2 = MemberUpdate("n3", "10.0.0.3:7946", Status.ALIVE, 0, {})
REC = GroupRecord(
    "g-1", name="digits", leader="n1", leader_address="127.0.0.1:7001",
    flower_address="127.0.0.1:9000", members=("n2", "n1"), model="mlp:1x8x8:10", capacity=5,
    accuracy=0.5, loss=1.25, round=7, examples=120, term=2, version=3, dissolved=False,
    updated_at=1700000000.5, created_at=1690000000.0,
)  # fmt: skip
TOMB = GroupRecord("g-2", leader="n3", term=1, version=9, dissolved=True)
S, A = "n0", "127.0.0.1:7000"
URL = {"url": "http://reg:8080"}

MESSAGES_BY_NAME = {
    "ping": Message(Kind.PING, S, A, Ping(17, "n1", (MU, REC))),
    "ping_bare": Message(Kind.PING, S, A, Ping(1, "n1")),
    "ping_req": Message(Kind.PING_REQ, S, A, PingReq(18, "n3", "10.0.0.3:7946", (MU2,))),
    "ack": Message(Kind.ACK, S, A, Ack(17, (TOMB, MU2))),
    "gossip": Message(Kind.GOSSIP, S, A, Gossip((MU, MU2, REC, TOMB))),
    "join": Message(Kind.JOIN, S, A, Join(True, (MU, MU2), (REC, TOMB), URL)),
    "push_pull": Message(Kind.PUSH_PULL, S, A, PushPull(False, (MU2,), (), {"url": None})),
    "leave": Message(Kind.LEAVE, S, A, Leave(4)),
    "model_request": Message(Kind.MODEL_REQUEST, S, A, ModelRequest(2, "g-1")),
    "model_response": Message(
        Kind.MODEL_RESPONSE, S, A, ModelResponse(2, "g-1", True, 7, b"\x00weights\xff")
    ),
    "model_response_none": Message(Kind.MODEL_RESPONSE, S, A, ModelResponse(3, "g-9", False)),
}


def codec() -> Codec:
    return Codec(CFG.max_frame_bytes, CFG.max_model_bytes, CFG.max_meta_bytes, GroupDelegate(30.0))


def test_every_kind_is_covered() -> None:
    kinds = {m.kind for m in MESSAGES_BY_NAME.values()}
    assert kinds == set(Kind) == set(MESSAGES)


@pytest.mark.parametrize("name", sorted(MESSAGES_BY_NAME))
def test_encoder_writes_the_fixed_bytes(name: str) -> None:
    assert codec().encode(MESSAGES_BY_NAME[name]).hex() == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(MESSAGES_BY_NAME))
def test_decoder_reads_the_fixed_bytes_back(name: str) -> None:
    c = codec()
    decoded = c.decode(bytes.fromhex(EXPECTED[name]))
    assert decoded == MESSAGES_BY_NAME[name], dict(c.drops)


def test_a_core_with_groups_writes_the_fixed_join_and_leave() -> None:
    """A whole node's state (members, group records, registry URL) as it sends it on JOIN."""
    c = codec()
    delegate = GroupDelegate(CFG.tombstone_ttl, registry_url="http://reg:8080")
    core = GossipCore(
        "n0",
        A,
        CFG,
        random.Random(3),
        0.0,
        meta={"name": "zero", "group": "g-1", "role": "node"},
        delegate=delegate,
    )
    core.handle("x", c.encode(Message(Kind.GOSSIP, "n3", "10.0.0.3:7946", Gossip((MU2, MU)))), 0.5)
    record = GroupRecord(
        "g-1", leader="n0", leader_address=A, members=("n0", "n1"), term=1, version=1
    )
    assert delegate.publish(record, 0.6)
    ((_, join),) = core.join("127.0.0.1:7009", 0.7)
    assert join.hex() == EXPECTED_CORE["core_join"]
    leave = core.leave(0.8)[0][1]
    assert leave.hex() == EXPECTED_CORE["core_leave"]
