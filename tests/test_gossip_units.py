"""Unit tests of the pure gossip state machines on a fake clock."""

from __future__ import annotations

import math
import random
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipCore
from mycelium_p2p.gossip import codec as codec_module
from mycelium_p2p.gossip.broadcast import BroadcastQueue, retransmit_limit
from mycelium_p2p.gossip.codec import Codec
from mycelium_p2p.gossip.membership import Member, Membership, suspicion_bounds
from mycelium_p2p.gossip.messages import (
    Ack,
    Gossip,
    Kind,
    MemberUpdate,
    Message,
    Ping,
    PingReq,
    Status,
)
from mycelium_p2p.groups import GroupDelegate, GroupRecord, GroupTable

CFG = GossipConfig.lan()


def member(node_id: str, status: Status = Status.ALIVE, inc: int = 0, by: str = "") -> MemberUpdate:
    return MemberUpdate(node_id, f"10.0.0.{len(node_id)}:7946", status, inc, {}, by)


def make(n_others: int = 9) -> Membership:
    m = Membership("me", "10.0.0.1:7946", {}, CFG, random.Random(1), 0.0)
    for i in range(n_others):
        m.add_known(member(f"p{i}"), 0.0)
    return m


def test_config_presets_validate() -> None:
    assert GossipConfig.lan().probe_interval == 1.0
    assert GossipConfig.local().gossip_interval < GossipConfig.lan().gossip_interval
    assert GossipConfig.test().probe_interval < 1.0
    try:
        GossipConfig(probe_timeout=2.0)
    except ValueError as exc:
        assert "probe_timeout" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_suspicion_formula_and_confirmations() -> None:
    low, high, k = suspicion_bounds(CFG, 1000)
    assert math.isclose(low, 4 * 3 * 1.0)
    assert math.isclose(high, 6 * low)
    assert k == 2
    m = make(9)
    assert m.apply(member("p1", Status.SUSPECT, 0, by="p2"), 10.0)
    s = m.suspicions["p1"]
    low, high, _ = suspicion_bounds(CFG, 10)
    assert math.isclose(s.deadline(), 10.0 + high)
    m.apply(member("p1", Status.SUSPECT, 0, by="p3"), 11.0)
    first = s.deadline()
    assert 10.0 + low < first < 10.0 + high
    m.apply(member("p1", Status.SUSPECT, 0, by="p4"), 12.0)
    assert math.isclose(s.deadline(), 10.0 + low)
    # Not dead before the deadline, dead at it.
    m.tick(10.0 + low - 0.01)
    assert m.members["p1"].status is Status.SUSPECT
    m.tick(10.0 + low)
    assert m.members["p1"].status is Status.DEAD


def test_failed_probe_leads_to_suspect_then_dead() -> None:
    m = make(3)
    t = 0.0
    target = None
    while target is None:
        out = m.tick(t)
        pings = [b for _, b in out if isinstance(b, Ping)]
        if pings:
            target = pings[0].target_id
        t += 0.1
    # No ack ever: ping-req after probe_timeout, suspect at the end of the period.
    while m.members[target].status is Status.ALIVE:
        t += 0.05
        m.tick(t)
        assert t < 10
    assert m.members[target].status is Status.SUSPECT
    while m.members[target].status is Status.SUSPECT:
        t += 0.5
        m.tick(t)
    assert m.members[target].status is Status.DEAD
    assert t - 1.0 <= suspicion_bounds(CFG, 4)[1] + 2 * CFG.probe_interval


def test_refutation_bumps_incarnation() -> None:
    m = make(2)
    m.broadcasts.clear()
    assert m.apply(MemberUpdate("me", "10.0.0.1:7946", Status.SUSPECT, 0, {}, "p0"), 1.0)
    assert m.incarnation == 1
    assert m.broadcasts[-1].status is Status.ALIVE and m.broadcasts[-1].incarnation == 1
    # A stale suspicion (older incarnation) is ignored.
    assert not m.apply(MemberUpdate("me", "10.0.0.1:7946", Status.SUSPECT, 0, {}, "p0"), 2.0)
    assert m.refutations == 1


def test_alive_overrides_suspect_only_with_higher_incarnation() -> None:
    m = make(2)
    m.apply(member("p0", Status.SUSPECT, 3, by="p1"), 1.0)
    assert not m.apply(member("p0", Status.ALIVE, 3), 1.0)
    assert m.members["p0"].status is Status.SUSPECT
    assert m.apply(member("p0", Status.ALIVE, 4), 1.0)
    assert m.members["p0"].status is Status.ALIVE and "p0" not in m.suspicions


def test_dead_is_remembered_then_forgotten() -> None:
    m = make(2)
    m.apply(member("p0", Status.DEAD, 0, by="p1"), 1.0)
    assert not m.apply(member("p0", Status.ALIVE, 0), 2.0)  # stale alive cannot resurrect
    m.tick(1.0 + CFG.dead_ttl)
    assert "p0" not in m.members
    assert "member_removed" in [k for k, _ in m.events]


def test_lww_converges_under_reordering_and_duplication() -> None:
    records = [
        GroupRecord("g-1", leader="a", term=t, version=v, accuracy=t + v / 10)
        for t in range(3)
        for v in range(4)
    ]
    best = max(records, key=lambda r: r.order)
    rng = random.Random(7)
    for _ in range(20):
        table = GroupTable(60.0)
        batch = records * 2
        rng.shuffle(batch)
        for r in batch:
            table.apply(r, 0.0)
        assert table.get("g-1") == best
    assert table.next_version("g-1", 2) == 4
    tomb = GroupRecord("g-1", leader="a", term=3, version=0, dissolved=True)
    assert table.apply(tomb, 1.0) and "g-1" not in table.live()
    assert not table.apply(best, 2.0)  # stale record cannot resurrect the group
    assert table.expire(61.0) == ["g-1"]


def test_group_record_members_sorted_and_roundtrip() -> None:
    r = GroupRecord("g-1", members=("c", "a", "b"), leader="a", term=1, version=2)
    assert r.members == ("a", "b", "c")
    assert GroupRecord.from_dict(r.to_dict()) == r


def test_retransmit_limit_and_replacement() -> None:
    assert retransmit_limit(4, 1000) == 16
    q = BroadcastQueue(retransmit_mult=2)
    q.queue("a", "old-a", 10)
    q.queue("b", "b", 10)
    q.queue("a", "new-a", 10)  # replaces the older news about the same subject
    assert len(q) == 2
    limit = retransmit_limit(2, 10)
    sent = [q.get(1000, 10) for _ in range(limit + 2)]
    assert sent[0] == ["new-a", "b"]  # newest first among equally sent
    assert sum(x.count("new-a") for x in sent) == limit
    assert len(q) == 0


def test_broadcast_budget_splits() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    for i in range(10):
        q.queue(i, i, 100)
    assert len(q.get(350, 10)) == 3


def _frame(kind: int, body: object, version: int = 1) -> bytes:
    return msgpack.packb([version, kind, "x1", "127.0.0.1:9", body])


def test_decoder_counts_each_reason() -> None:
    c = Codec(2000, 10_000, 512)
    assert c.decode(b"\xc1garbage") is None
    assert c.decode(_frame(2, {"q": 1, "t": "me"}, version=99)) is None
    assert c.decode(_frame(99, {})) is None
    assert c.decode(_frame(2, {"q": -1, "t": "me"})) is None
    assert c.decode(b"\x00" * 20_000) is None
    assert c.decode(_frame(6, {"u": ["x" * 3000]})) is None
    assert dict(c.drops) == {
        "malformed": 1,
        "bad_version": 1,
        "unknown_kind": 1,
        "invalid": 1,
        "oversize": 2,
    }
    ok = c.decode(_frame(2, {"q": 1, "t": "me", "u": []}))
    assert ok is not None and ok.kind is Kind.PING


def test_codec_roundtrip_all_updates() -> None:
    c = Codec(60_000, 10**6, 512, GroupDelegate(60.0))
    body = Gossip((member("p1", Status.SUSPECT, 3, by="p2"), GroupRecord("g-1", term=1)))
    msg = Message(Kind.GOSSIP, "n1", "127.0.0.1:1", body)
    assert c.decode(c.encode(msg)) == msg


def _core() -> GossipCore:
    delegate = GroupDelegate(CFG.tombstone_ttl)
    return GossipCore("me", "127.0.0.1:7000", CFG, random.Random(3), 0.0, delegate=delegate)


def _snapshot(core: GossipCore) -> tuple:
    return (
        [(v.id, v.status, v.incarnation) for v in core.members()],
        core.delegate.table.all(),  # type: ignore[attr-defined]
        len(core.queue),
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_frames_change_nothing(frame: bytes) -> None:
    core = _core()
    before = _snapshot(core)
    out = core.handle("127.0.0.1:1", frame, 1.0)
    stats = core.stats()
    if out == [] and _snapshot(core) == before:
        assert stats["frames_in"] == 1
    if sum(stats["drops"].values()) == 1:
        assert _snapshot(core) == before and out == []


_VALID = [
    _frame(2, {"q": 5, "t": "me", "u": [{"t": "m", "i": "p9", "a": "1.2.3.4:5", "s": 0, "n": 1}]}),
    _frame(6, {"u": [GroupRecord("g-1", term=1, version=1).to_dict() | {"t": "g"}]}),
    _frame(5, {"r": True, "m": [], "g": [], "url": None}),
    _frame(8, {"q": 1, "g": "g-1"}),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_VALID), st.data())
def test_fuzz_mutated_frames_never_raise(frame: bytes, data: st.DataObject) -> None:
    core = _core()
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(buf)))
    out = core.handle("127.0.0.1:1", bytes(buf[:cut]), 1.0)
    stats = core.stats()
    assert stats["frames_in"] == 1
    assert isinstance(out, list)
    decoded = sum(v for k, v in stats.items() if k.startswith("in_"))
    assert decoded + sum(stats["drops"].values()) == 1


def test_recently_dead_members_still_get_gossip_so_they_can_refute() -> None:
    core = _core()
    core.membership.add_known(member("p0"), 0.0)
    dead_address = member("p0").address
    # p1 tells us p0 is dead; that update is queued for retransmission.
    frame = Codec(60_000, 10**6, 512).encode(
        Message(Kind.GOSSIP, "p1", "10.0.0.2:7946", Gossip((member("p0", Status.DEAD, 0, "p1"),)))
    )
    core.handle("10.0.0.2:7946", frame, 1.0)
    assert [v.status for v in core.members() if v.id == "p0"] == ["dead"]
    # p0 is no live peer any more, yet the next gossip tick still reaches it.
    sent = core.tick(1.0 + CFG.gossip_interval)
    assert dead_address in [dest for dest, _ in sent]
    # Once it has been dead for a while, it is left alone.
    later = core.tick(1.0 + CFG.dead_ttl)
    assert dead_address not in [dest for dest, _ in later]


def _first_ping(m: Membership, t: float) -> tuple[Ping, float]:
    while True:
        pings = [b for _, b in m.tick(t) if isinstance(b, Ping)]
        if pings:
            return pings[0], t
        t += 0.01


def _indirect_delay(m: Membership, t: float) -> tuple[float, float]:
    """(seconds from the next probe until its ping-reqs go out, when that was); no ack comes."""
    _, sent = _first_ping(m, t)
    t = sent
    while not any(isinstance(b, PingReq) for _, b in m.tick(t)):
        t += 0.01
    return t - sent, t


def test_local_health_stretches_probes_after_failures_and_heals_on_acks() -> None:
    m = make(5)
    assert m.health == 0
    delay, t = _indirect_delay(m, 0.0)
    assert delay == pytest.approx(CFG.probe_timeout, abs=0.02)
    # That probe fails at the end of its period (we may be the slow one), and the next probe
    # waits twice as long before asking others to help.
    delay, t = _indirect_delay(m, t)
    assert m.health == 1
    assert delay == pytest.approx(2 * CFG.probe_timeout, abs=0.02)
    # A successful probe lowers the score again.
    ping, t = _first_ping(m, t)
    level = m.health
    m.on_ack(Ack(ping.seq))
    assert m.health == level - 1
    # A refutation of our own suspicion raises it.
    m.apply(member("me", Status.SUSPECT, m.incarnation, by="p1"), t)
    assert m.health == level


def test_live_members_stay_exact_under_churn() -> None:
    """The live list drawn from (stale entries included) always yields exactly the live ones."""
    rng = random.Random(5)
    m = make(40)
    now = 0.0
    for _ in range(3000):
        node_id = f"p{rng.randrange(60)}"
        status = rng.choice(list(Status))
        known = m.members.get(node_id)
        inc = (known.incarnation if known else 0) + rng.randrange(2)
        m.apply(member(node_id, status, inc, by="" if status is Status.ALIVE else "p0"), now)
        now += 0.3
        m.tick(now)
        live = {x.node_id for x in m.members.values() if x.status <= Status.SUSPECT}
        assert {x.node_id for x in m.live()} == live
        assert m.num_live() == 1 + len(live)
        picked = [p.node_id for p in m.pick(5, exclude="p1")]
        assert len(picked) == len(set(picked)) == min(5, len(live - {"p1"}))
        assert set(picked) <= live - {"p1"}


def test_pick_is_uniform_over_live_members_and_extras() -> None:
    m = make(12)
    for i in range(4):  # four stale entries in the list drawn from
        m.apply(member(f"p{i}", Status.DEAD, 0, by="p9"), 1.0)
    extra = [m.members["p0"]]  # e.g. a recently dead member, a gossip target all the same
    counts: dict[str, int] = {}
    for _ in range(9000):
        for p in m.pick(1, extra):
            counts[p.node_id] = counts.get(p.node_id, 0) + 1
    assert set(counts) == {"p0", *(f"p{i}" for i in range(4, 12))}
    assert all(800 < c < 1200 for c in counts.values()), counts  # 1000 each expected


def test_views_sharing_members_copy_before_they_change_one() -> None:
    shared = {
        f"p{i}": Member(f"p{i}", f"10.0.0.{i}:1", Status.ALIVE, 0, {}, 0.0, True) for i in range(3)
    }
    a = Membership("p0", "10.0.0.0:1", {}, CFG, random.Random(1), 0.0)
    b = Membership("p1", "10.0.0.1:1", {}, CFG, random.Random(2), 0.0)
    a.adopt(shared)
    b.adopt(shared)
    assert set(a.members) == {"p1", "p2"} and a.num_live() == 3
    assert a.apply(member("p2", Status.DEAD, 0, by="p0"), 1.0)
    assert a.members["p2"].status is Status.DEAD and a.num_live() == 2
    assert b.members["p2"].status is Status.ALIVE and shared["p2"].status is Status.ALIVE


_STATE = {"t": "m", "i": "p", "a": "1.2.3.4:5", "s": 0, "n": 1}
_WITH_RECORDS = [*_VALID, _frame(5, {"r": False, "m": [_STATE, _STATE | {"n": 2}]})]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_WITH_RECORDS), st.data())
def test_streamed_record_lists_decode_as_a_whole_frame_would(
    frame: bytes, data: st.DataObject
) -> None:
    """Frames with record lists are unpacked entry by entry (entries seen before are not decoded
    again): whatever the bytes, the outcome and the drop reason equal a plain ``unpackb``."""
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(0, 4))):
        buf[data.draw(st.integers(3, len(buf) - 1))] = data.draw(st.integers(0, 255))
    mutated = bytes(buf[: data.draw(st.integers(3, len(buf)))])
    streamed = Codec(60_000, 10**6, 512, GroupDelegate(60.0))
    whole = Codec(60_000, 10**6, 512, GroupDelegate(60.0))
    with mock.patch.object(codec_module, "_RECORD_PREFIXES", frozenset()):
        expected = whole.decode(mutated)
    assert streamed.decode(mutated) == expected
    assert streamed.decode(mutated) == expected  # the second time from the memo
    assert streamed.drops == whole.drops + whole.drops


def test_an_entry_read_as_a_member_state_is_not_taken_for_a_member_update_elsewhere() -> None:
    """The memo of decoded members keys on exact bytes, and only entries tagged as members:
    a state entry tagged "g" (read as a member there, tags being optional in states) is still
    an application item in an updates list, whatever was decoded before."""
    c = Codec(60_000, 10**6, 512, GroupDelegate(60.0))
    entry = {"t": "g", "i": "p7", "a": "1.2.3.4:5", "s": 0, "n": 1}
    state = c.decode(_frame(5, {"r": False, "m": [entry]}))
    assert state is not None and state.body.members[0].node_id == "p7"
    assert c.decode(_frame(6, {"u": [entry]})) is None  # not a group record: invalid
    assert c.drops["invalid"] == 1


def test_the_member_memo_stays_small_whatever_the_entries() -> None:
    """Unknown keys are ignored, so an entry can be padded: such an entry is accepted but never
    remembered (the memo's memory is bounded by its entry count times ``MEMO_ENTRY_BYTES``)."""
    c = Codec(60_000, 10**6, 512)
    padded = [_STATE | {"n": 10 + i, "pad": "x" * 20_000} for i in range(2)]
    before = len(codec_module._MEMO)
    assert c.decode(_frame(5, {"r": False, "m": padded})) is not None
    assert c.decode(_frame(5, {"r": False, "m": [_STATE | {"n": 99}]})) is not None
    assert len(codec_module._MEMO) == before + 1
    assert all(len(data) <= codec_module.MEMO_ENTRY_BYTES for _, data in codec_module._MEMO)
