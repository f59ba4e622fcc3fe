"""Hostile gossip frames, sent as an attacker would, against real nodes on real ZeroMQ sockets.

The attacker holds the network's secret unless said otherwise (a member that turned hostile, or a
lost laptop): it speaks CURVE with the derived client keys, so its frames reach the gossip code.
Each test names the attack it replays; each failed on the code before its protection.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipNode
from mycelium_p2p.gossip.codec import Codec
from mycelium_p2p.gossip.messages import (
    Gossip,
    Kind,
    MemberUpdate,
    Message,
    ModelResponse,
    Status,
)
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.limits import MAX_COUNTER
from mycelium_p2p.security import derive_keys
from tests.helpers import ROOT, wait_for

SECRET = "s3cret"
CONFIG = GossipConfig.test()


def gossip_thread_alive(node_id: str) -> bool:
    """Whether the gossip thread of ``node_id`` still runs (read from outside the node)."""
    return any(t.name == f"gossip-{node_id}" and t.is_alive() for t in threading.enumerate())


def frame(body: Gossip, sender: str = "mallory", address: str = "127.0.0.1:9") -> bytes:
    codec = Codec(CONFIG.max_frame_bytes, CONFIG.max_model_bytes, CONFIG.max_meta_bytes)
    return codec.encode(Message(Kind.GOSSIP, sender, address, body))


class Attacker:
    """A raw DEALER to one node: CURVE with the network's keys, or with a key pair of its own."""

    def __init__(self, dest: str, *, own_keys: bool = False) -> None:
        keys = derive_keys(SECRET)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # A DEALER's send waits for a connection; one refused at the handshake never comes.
        self.sock.setsockopt(zmq.SNDTIMEO, 5000)
        self.sock.curve_serverkey = keys.server_public
        if own_keys:
            public, secret = zmq.curve_keypair()
        else:
            public, secret = keys.client_public, keys.client_secret
        self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
        self.sock.connect(f"tcp://{dest}")

    def send(self, data: bytes) -> None:
        """Send ``data``; a frame that found no connection within 5 s is not sent (the checks
        that follow say whether it should have been)."""
        with contextlib.suppress(zmq.Again):
            self.sock.send(data)

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture
def trio() -> Iterator[list[GossipNode]]:
    nodes = [GossipNode(n, CONFIG, meta={"name": n}, secret=SECRET) for n in ("a", "b", "c")]
    for node in nodes:
        node.start()
    for node in nodes[1:]:
        assert node.join([nodes[0].address or ""], timeout=5.0)
    wait_for(lambda: all(len(live(n)) == 3 for n in nodes), 10, what="three live members")
    yield nodes
    for node in nodes:
        node.stop()


def live(node: GossipNode) -> set[str]:
    return {m.id for m in node.members() if m.status == "alive"}


def member(node: GossipNode, node_id: str) -> MemberUpdate | None:
    return next((m for m in node.members() if m.id == node_id), None)  # type: ignore[return-value]


@pytest.mark.slow
@pytest.mark.parametrize(
    "status,incarnation",
    [
        (Status.SUSPECT, 2**64 - 1),  # the reported frame: the refutation overflowed msgpack
        (Status.DEAD, 2**64 - 1),
        (Status.SUSPECT, MAX_COUNTER),  # at the bound: nobody could refute it
        (Status.SUSPECT, 40_000_000),  # within the bound, but a forged jump of the incarnation
    ],
)
def test_one_accusation_at_a_huge_incarnation_kills_no_gossip(
    trio: list[GossipNode], status: Status, incarnation: int
) -> None:
    a, b, c = trio
    invalid_before = a.stats()["drops"]["invalid"]
    accusation = MemberUpdate("b", b.address or "", status, incarnation, {"name": "b"}, "mallory")
    attacker = Attacker(a.address or "")
    try:
        attacker.send(frame(Gossip((accusation,))))
        # Honest frames arrive too: wait for the attacker's to be counted, not for any frame.
        wait_for(
            lambda: a.stats()["drops"]["invalid"] > invalid_before, 10, what="the frame dropped"
        )
    finally:
        attacker.close()
    # Time passes with gossip at work: b's next metadata reaches both others.
    b.update_meta(marker="after")
    wait_for(
        lambda: all((m := member(n, "b")) and m.meta.get("marker") == "after" for n in (a, c)),
        10,
        what="b's metadata on a and c",
    )
    assert all(gossip_thread_alive(n) for n in "abc")
    assert all(live(n) == {"a", "b", "c"} for n in trio)
    assert b.stats()["incarnation"] < 100  # not pushed towards the bound
    print(f"{status.name} at {incarnation}: dropped; b at {b.stats()['incarnation']}")


def handshake_outcome(sock: zmq.Socket, timeout: float) -> int:
    """The first handshake event on ``sock``: succeeded, or failed (auth or protocol)."""
    outcomes = {
        zmq.EVENT_HANDSHAKE_SUCCEEDED,
        zmq.EVENT_HANDSHAKE_FAILED_AUTH,
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if monitor_poll(sock, deadline):
            event = recv_monitor_message(sock)["event"]
            if event in outcomes:
                return int(event)
    raise AssertionError("no handshake outcome")


def monitor_poll(sock: zmq.Socket, deadline: float) -> bool:
    return bool(sock.poll(max(0.0, deadline - time.monotonic()) * 1000))


@pytest.mark.slow
def test_a_random_key_pair_that_knows_the_server_key_is_not_heard(trio: list[GossipNode]) -> None:
    a = trio[0]
    intruder = MemberUpdate("mallory", "127.0.0.1:9", Status.ALIVE, 1, {"name": "mallory"})
    stranger = Attacker(a.address or "", own_keys=True)
    monitor = stranger.sock.get_monitor_socket()
    try:
        stranger.send(frame(Gossip((intruder,))))
        outcome = handshake_outcome(monitor, 10)
        # The control: the network's own client keys are heard.
        insider = Attacker(a.address or "")
        marker = MemberUpdate("marker", "127.0.0.1:10", Status.ALIVE, 1, {"name": "marker"})
        insider.send(frame(Gossip((marker,)), sender="marker", address="127.0.0.1:10"))
        wait_for(lambda: member(a, "marker"), 10, what="the insider's frame")
        insider.close()
    finally:
        stranger.sock.disable_monitor()
        monitor.close(0)
        stranger.close()
    assert outcome == zmq.EVENT_HANDSHAKE_FAILED_AUTH, outcome
    assert member(a, "mallory") is None
    assert gossip_thread_alive("a")


def group_record(term: int, version: int = 1) -> GroupRecord:
    return GroupRecord(
        "g-victim",
        leader="mallory",
        leader_address="127.0.0.1:9",
        flower_address="127.0.0.1:9",
        members=("b", "mallory"),
        model="mlp:1x8x8:10",
        capacity=5,
        term=term,
        version=version,
    )


@pytest.mark.slow
@pytest.mark.parametrize("term", [2**63 - 1, MAX_COUNTER])
def test_a_group_record_at_a_term_no_claim_can_follow_is_dropped(
    trio: list[GossipNode], term: int
) -> None:
    a, b, _ = trio
    honest = GroupRecord(
        "g-victim",
        leader="b",
        leader_address=b.address or "",
        flower_address="127.0.0.1:1",
        members=("b",),
        model="mlp:1x8x8:10",
        capacity=5,
        term=3,
        version=1,
    )
    assert b.publish_group(honest)
    wait_for(lambda: "g-victim" in a.groups(), 10, what="the honest record on a")
    invalid_before = a.stats()["drops"]["invalid"]
    attacker = Attacker(a.address or "")
    try:
        attacker.send(frame(Gossip((group_record(term),))))
        # Honest frames arrive too: wait for the attacker's to be counted, not for any frame.
        wait_for(
            lambda: a.stats()["drops"]["invalid"] > invalid_before, 10, what="the frame dropped"
        )
    finally:
        attacker.close()
    assert a.groups()["g-victim"].leader == "b"
    assert a.groups()["g-victim"].term == 3


def rss_peak_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


@pytest.mark.slow
def test_unsolicited_big_model_responses_cost_no_memory() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mycelium_p2p.gossip", "--id", "target", "--secret", SECRET]
    proc = subprocess.Popen(
        [*cmd, "--preset", "test"], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        address = re.search(r'"address": "([^"]+)"', proc.stdout.readline()).group(1)  # type: ignore[union-attr]
        before = rss_peak_kib(proc.pid)
        codec = Codec(CONFIG.max_frame_bytes, CONFIG.max_model_bytes, CONFIG.max_meta_bytes)
        payload = os.urandom(60 * 1024 * 1024)
        big = codec.encode(
            Message(
                Kind.MODEL_RESPONSE,
                "mallory",
                "127.0.0.1:9",
                ModelResponse(1, "g-x", True, 1, payload),
            )
        )
        for _ in range(3):  # each on a connection of its own, given 3 s to go out
            attacker = Attacker(address)
            attacker.send(big)
            attacker.sock.close(linger=3000)
        # The node still answers on gossip afterwards: a newcomer joins through it.
        probe = GossipNode("probe", CONFIG, secret=SECRET)
        probe.start()
        try:
            assert probe.join([address], timeout=10.0)
        finally:
            probe.stop()
        after = rss_peak_kib(proc.pid)
        print(f"peak resident memory {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB")
        assert after - before < 40 * 1024
    finally:
        proc.terminate()
        proc.wait(10)
