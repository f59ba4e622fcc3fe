"""The delegate boundary: an application rides on gossip without the core owning its state."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgpack

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipCore, NullDelegate, SimCluster
from mycelium_p2p.gossip.codec import Codec
from mycelium_p2p.gossip.messages import (
    MESSAGES,
    Gossip,
    Kind,
    MemberUpdate,
    Message,
    Status,
)

CFG = GossipConfig.test()


@dataclass(frozen=True, slots=True)
class Note:
    """A toy application item: the newest text per key wins."""

    key: str
    text: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.key, "x": self.text, "v": self.version}


class Notes(NullDelegate):
    """A toy application: a last-writer-wins map, shared by gossip and push-pull."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: dict[str, Note] = {}
        self.motto: str | None = None
        self.ticks = 0

    def parse_item(self, raw: dict[str, Any]) -> Note:
        key, text, version = raw.get("k"), raw.get("x"), raw.get("v")
        if not isinstance(key, str) or not isinstance(text, str) or not isinstance(version, int):
            raise ValueError("a note is {k: str, x: str, v: int}")
        return Note(key, text, version)

    def parse_header(self, raw: dict[str, Any]) -> dict[str, Any]:
        motto = raw.get("motto")
        if motto is not None and not isinstance(motto, str):
            raise ValueError("motto must be a string")
        return {"motto": motto}

    def notify(self, item: Any, now: float) -> bool:
        if item.text == "poison":  # valid on the wire, refused by the application
            raise ValueError("poisoned note")
        return self.write(item)

    def write(self, note: Note) -> bool:
        held = self.notes.get(note.key)
        if held is not None and held.version >= note.version:
            return False
        self.notes[note.key] = note
        self.broadcast(note.key, note)
        self.emit("note", note)
        return True

    def local_state(self) -> tuple[dict[str, Any], list[Any]]:
        return {"motto": self.motto}, list(self.notes.values())

    def merge_remote_state(self, header: dict[str, Any], items: list[Any], now: float) -> None:
        for note in items:
            self.write(note)
        self.motto = self.motto or header.get("motto")

    def tick(self, now: float) -> None:
        self.ticks += 1


def core(name: str, port: int, delegate: NullDelegate) -> GossipCore:
    return GossipCore(name, f"127.0.0.1:{port}", CFG, random.Random(port), 0.0, delegate=delegate)


def exchange(a: GossipCore, b: GossipCore, out: list[tuple[str, bytes]], now: float) -> None:
    """Deliver ``out`` (from either core) until nothing is left to say."""
    by_address = {a.address: a, b.address: b}
    while out:
        dest, frame = out.pop(0)
        if dest in by_address:
            sender = b if by_address[dest] is a else a
            out += by_address[dest].handle(sender.address, frame, now)


def test_every_declared_kind_has_one_handler() -> None:
    assert set(core("a", 1, NullDelegate()).handlers) == set(MESSAGES.values())


def test_an_application_item_and_header_round_trip_by_push_pull_and_gossip() -> None:
    na, nb = Notes(), Notes()
    a, b = core("a", 1, na), core("b", 2, nb)
    na.motto = "hello"
    assert na.write(Note("k1", "first", 1))
    exchange(a, b, b.join(a.address, 0.1), 0.1)  # b joins through a: both states cross
    assert nb.notes == {"k1": Note("k1", "first", 1)} and nb.motto == "hello"
    assert b.join_responses == 1
    # A newer note written on a gossips to b on a's next gossip tick.
    assert na.write(Note("k1", "second", 2))
    exchange(a, b, a.tick(1.0), 1.0)
    assert nb.notes["k1"].text == "second"
    assert [e.item for e in b.drain_events() if e.kind == "note"] == [
        Note("k1", "first", 1),
        Note("k1", "second", 2),
    ]
    assert na.ticks >= 1  # the delegate's timer ran with the core's


def test_gossip_spreads_an_item_to_every_simulated_node() -> None:
    c = SimCluster(30, CFG, seed=3, delegate=Notes)
    c.run_until(1.0)
    first = next(iter(c.delegates.values()))
    assert first.write(Note("k", "to all", 1))
    assert c.run_while(
        lambda: any("k" not in d.notes for d in c.delegates.values()), 10.0, CFG.gossip_interval
    )


def frame(*updates: Any, sender: str = "x1") -> bytes:
    codec = Codec(CFG.max_frame_bytes, CFG.max_model_bytes, CFG.max_meta_bytes)
    return codec.encode(Message(Kind.GOSSIP, sender, "127.0.0.1:9", Gossip(tuple(updates))))


def test_an_item_the_wire_refuses_drops_the_whole_frame_and_is_counted() -> None:
    notes = Notes()
    a = core("a", 1, notes)
    newcomer = MemberUpdate("x2", "127.0.0.1:8", Status.ALIVE, 1, {})
    bad = frame(newcomer, {"k": "k", "x": 7, "v": 1})  # text must be a string
    assert a.handle("127.0.0.1:9", bad, 1.0) == []
    assert a.stats()["drops"]["invalid"] == 1
    assert notes.notes == {} and [m.id for m in a.members()] == ["a"]  # nothing applied
    # The same frame with a valid item is taken whole.
    a.handle("127.0.0.1:9", frame(newcomer, {"k": "k", "x": "ok", "v": 1}), 1.0)
    assert "k" in notes.notes and "x2" in [m.id for m in a.members()]


def test_an_item_the_application_refuses_is_counted_and_dropped_alone() -> None:
    notes = Notes()
    a = core("a", 1, notes)
    newcomer = MemberUpdate("x2", "127.0.0.1:8", Status.ALIVE, 1, {})
    poisoned = {"k": "p", "x": "poison", "v": 1}
    fine = {"k": "f", "x": "fine", "v": 1}
    a.handle("127.0.0.1:9", frame(poisoned, newcomer, fine), 1.0)
    assert a.stats()["drops"]["invalid"] == 1
    assert set(notes.notes) == {"f"} and "x2" in [m.id for m in a.members()]


def test_a_bad_push_pull_header_drops_the_state() -> None:
    notes = Notes()
    a = core("a", 1, notes)
    body = {"r": False, "m": [], "g": [{"k": "k", "x": "x", "v": 1}], "motto": 42}
    raw = msgpack.packb([1, int(Kind.PUSH_PULL), "x1", "127.0.0.1:9", body])
    assert a.handle("127.0.0.1:9", raw, 1.0) == []
    assert a.stats()["drops"]["invalid"] == 1 and notes.notes == {}


def test_without_an_application_items_are_refused() -> None:
    a = core("a", 1, NullDelegate())
    a.handle("127.0.0.1:9", frame({"k": "k", "x": "x", "v": 1}), 1.0)
    assert a.stats()["drops"]["invalid"] == 1
