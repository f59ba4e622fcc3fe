"""Unit tests of the pure group choice policy (``mycelium_p2p.policy``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from mycelium_p2p.policy import (
    Candidate,
    Observation,
    PolicyParams,
    compatible,
    decide,
)

PROBE = PolicyParams()
REPORTED = PolicyParams(mode="reported")


def obs(
    current: Candidate | None,
    others: list[Candidate],
    *,
    local: float | None = None,
    n: int = 20,
    just_moved: bool = False,
    probe_n: int | None = None,
    data_changed: bool = False,
) -> Observation:
    cands = ([current] if current else []) + others
    return Observation(
        current_group=current.group_id if current else None,
        local_accuracy=local,
        val_size=n,
        candidates=tuple(cands),
        just_moved=just_moved,
        has_other_members=bool(current and current.size > 1),
        probe_size=probe_n,
        data_changed=data_changed,
    )


def cur(acc: float, size: int = 3, created: float = 0.0, gid: str = "g") -> Candidate:
    return Candidate(gid, size, 5, created, acc, is_current=True)


# --- improve: relative threshold and noise floor in samples ---------------------------------


def test_switch_needs_samples_floor_when_relative_gain_is_tiny() -> None:
    # n = 20: 3 samples = 0.15; 5 % of 0.6 = 0.03. A 2-sample gain (0.10) is noise.
    d = decide(obs(cur(0.60), [Candidate("b", 2, 5, 1.0, 0.70)]), PROBE)
    assert d.action == "stay"
    d = decide(obs(cur(0.60), [Candidate("b", 2, 5, 1.0, 0.75)]), PROBE)
    assert (d.action, d.group_id) == ("join", "b")
    assert "improve" in d.reason and "0.750" in d.reason and "3/20" in d.reason


def test_switch_needs_relative_threshold_when_validation_is_large() -> None:
    # n = 1000: 3 samples = 0.003, but 5 % of 0.8 = 0.04 rules.
    base = cur(0.80)
    assert decide(obs(base, [Candidate("b", 2, 5, 1.0, 0.83)], n=1000), PROBE).action == "stay"
    d = decide(obs(base, [Candidate("b", 2, 5, 1.0, 0.84)], n=1000), PROBE)
    assert (d.action, d.group_id) == ("join", "b")


def test_switch_picks_the_best_group_with_room() -> None:
    others = [Candidate("b", 2, 5, 1.0, 0.80), Candidate("c", 2, 5, 2.0, 0.95)]
    d = decide(obs(cur(0.5), others), PROBE)
    assert (d.action, d.group_id) == ("join", "c")


# --- capacity ----------------------------------------------------------------------------


def test_never_joins_a_full_group() -> None:
    full = Candidate("b", 5, 5, 1.0, 1.0)
    d = decide(obs(cur(0.2), [full], local=0.2), PROBE)
    assert d.action == "stay"
    assert decide(obs(cur(0.2), [full]), REPORTED).action == "stay"


def test_no_group_joins_best_with_room_else_founds() -> None:
    full = Candidate("a", 5, 5, 0.0, 0.99)
    ok = Candidate("b", 1, 5, 1.0, 0.30)
    better = Candidate("c", 2, 5, 2.0, 0.50)
    d = decide(obs(None, [full, ok, better]), PROBE)
    assert (d.action, d.group_id) == ("join", "c")
    d = decide(obs(None, [full]), PROBE)
    assert d.action == "found" and d.group_id is None
    assert d.reason == "no group: the one compatible group is full"
    alone = decide(obs(None, []), PROBE)
    assert alone.action == "found"
    assert alone.reason == "no group: no group trains this node's model yet"  # not "none of 0"


def test_no_group_without_scores_joins_largest_with_room() -> None:
    a = Candidate("a", 1, 5, 0.0)
    b = Candidate("b", 3, 5, 1.0)
    d = decide(obs(None, [a, b]), PROBE)
    assert (d.action, d.group_id) == ("join", "b")


# --- hysteresis ------------------------------------------------------------------------------


def test_stays_right_after_a_move_even_for_a_big_gain() -> None:
    o = obs(cur(0.1), [Candidate("b", 2, 5, 1.0, 1.0)], local=1.0, just_moved=True)
    for params in (PROBE, REPORTED):
        d = decide(o, params)
        assert d.action == "stay" and "just moved" in d.reason


# --- merge -----------------------------------------------------------------------------------


def test_merges_into_larger_group_that_serves_as_well() -> None:
    # Same concept split in two: b is larger and scores one sample less (within 2/20).
    d = decide(obs(cur(0.90, size=2), [Candidate("b", 3, 5, 1.0, 0.85)], local=0.85), PROBE)
    assert (d.action, d.group_id) == ("join", "b") and d.reason.startswith("merge")


def test_merge_respects_local_model_floor() -> None:
    # The local model is far better than b: b would not serve the node as well.
    d = decide(obs(cur(0.90, size=2), [Candidate("b", 3, 5, 1.0, 0.85)], local=1.0), PROBE)
    assert d.action != "join"


def test_merge_never_into_smaller_or_younger_equal_group() -> None:
    smaller = Candidate("b", 1, 5, -1.0, 0.90)
    younger_equal = Candidate("c", 3, 5, 5.0, 0.90)
    d = decide(obs(cur(0.90, size=3, created=1.0), [smaller, younger_equal], local=0.9), PROBE)
    assert d.action == "stay"
    older_equal = Candidate("d", 3, 5, 0.5, 0.90)
    d = decide(obs(cur(0.90, size=3, created=1.0), [older_equal], local=0.9), PROBE)
    assert (d.action, d.group_id) == ("join", "d")


def test_merge_joins_the_largest_eligible() -> None:
    others = [Candidate("b", 3, 5, 1.0, 0.90), Candidate("c", 4, 5, 2.0, 0.88)]
    d = decide(obs(cur(0.90, size=2), others, local=0.9), PROBE)
    assert (d.action, d.group_id) == ("join", "c")


def test_merges_cannot_cycle() -> None:
    """Repeated merge decisions on one concept only raise the sum of squared sizes."""
    rng = random.Random(1)
    sizes = {"a": 1, "b": 2, "c": 1, "d": 2}
    created = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}
    members = [g for g, s in sizes.items() for _ in range(s)]
    moves = 0
    for _ in range(50):
        rng.shuffle(members)
        for i, g in enumerate(members):
            cands = [
                Candidate(h, s, 5, created[h], 0.9, is_current=(h == g))
                for h, s in sizes.items()
                if s > 0
            ]
            o = Observation(g, 0.9, 20, tuple(cands), False, sizes[g] > 1)
            d = decide(o, PROBE)
            if d.action == "join":
                before = sum(s * s for s in sizes.values())
                sizes[g] -= 1
                sizes[d.group_id] += 1
                members[i] = d.group_id
                assert sum(s * s for s in sizes.values()) > before
                moves += 1
    assert moves < 10
    assert sorted(s for s in sizes.values() if s) == [1, 5]


# --- founding --------------------------------------------------------------------------------


def test_founds_when_local_model_beats_every_group_by_margin() -> None:
    # n = 20: found needs local >= max(a(g), a(b)) + 4/20 = 0.5 + 0.2.
    others = [Candidate("b", 2, 5, 1.0, 0.5)]
    d = decide(obs(cur(0.45), others, local=0.65), PROBE)
    assert d.action == "stay"
    d = decide(obs(cur(0.45), others, local=0.70), PROBE)
    assert d.action == "found" and d.group_id is None and "0.700" in d.reason


def test_never_improves_into_a_group_its_own_model_beats_by_the_found_margin() -> None:
    # A drifted node: its old group scores 0.10 on its new data, its new concept's groups are
    # full, a group of a third concept scores 0.45, its own model (caught up) 0.90. Joining
    # the third would be a clear gain over the old group and a clear loss against its own.
    others = [Candidate("third", 2, 5, 1.0, 0.45)]
    d = decide(obs(cur(0.10), others, local=0.90), PROBE)
    assert d.action == "found", d.reason
    # Alone in its group it stays (its group's model is its own model's).
    assert decide(obs(cur(0.10, size=1), others, local=0.90), PROBE).action == "stay"
    # Within the margin the group is joined as before (n = 20: 0.45 + 4/20 = 0.65).
    assert decide(obs(cur(0.10), others, local=0.60), PROBE).action == "join"


def test_groups_scored_on_more_samples_are_compared_on_those_the_local_model_on_its_own() -> None:
    # A drifted node with 12 validation samples, of concepts that share half their labels:
    # its old group scores 0.75 there, its new concept's group 0.92, two samples (< 3/12).
    # Scored with its 48 training samples too (no group trained on them), 0.55 against 0.90.
    new = [Candidate("new", 2, 5, 1.0, 11 / 12)]
    assert decide(obs(cur(9 / 12), new, local=0.9, n=12), PROBE).action == "stay"
    new = [Candidate("new", 2, 5, 1.0, 0.90)]
    d = decide(obs(cur(0.55), new, local=0.9, n=12, probe_n=60), PROBE)
    assert (d.action, d.group_id) == ("join", "new") and "3/60" in d.reason, d.reason
    near = [Candidate("near", 2, 5, 1.0, 0.90)]  # 0.10: six samples of 60, one of 12
    assert decide(obs(cur(0.80), near, local=0.8, n=12, probe_n=60), PROBE).action == "join"
    assert decide(obs(cur(0.80), near, local=0.8, n=12), PROBE).action == "stay"
    # The local model was trained on those samples: it is held to its 12 validation samples.
    # 0.70 does not beat 0.60 by 4/12, so the gain of 0.05 over 60 samples moves the node.
    third = [Candidate("third", 2, 5, 1.0, 0.60)]
    d = decide(obs(cur(0.55), third, local=0.70, n=12, probe_n=60), PROBE)
    assert (d.action, d.group_id) == ("join", "third"), d.reason
    # A merge: no lower than the current group less 2/60, nor the local model less 2/12.
    big = [Candidate("big", 4, 5, 1.0, 0.70)]
    assert decide(obs(cur(0.70), big, local=0.90, n=12, probe_n=60), PROBE).action == "stay"
    d = decide(obs(cur(0.70), big, local=0.86, n=12, probe_n=60), PROBE)
    assert d.action == "join" and "0.700 - 2/60" in d.reason and "0.860 - 2/12" in d.reason


def test_a_drifted_node_never_merges_into_a_group_as_lost_on_its_data_as_its_own() -> None:
    # Traced at 24 nodes: a drifted leader's group and stale own model scored 0.000 and 0.167 on
    # its new data, so a larger group of a third concept, at 0.000 too, passed the merge floor.
    groups = [Candidate("third", 6, 8, 1.0, 0.0), Candidate("new", 8, 8, 1.0, 0.967)]
    now = obs(cur(0.0, size=4), groups, local=2 / 12, n=12, probe_n=60, data_changed=True)
    d = decide(now, PROBE)
    assert (d.action, d.seed) == ("found", "new"), d.reason
    # The same figures without a data change: the merge rule as before.
    now = obs(cur(0.0, size=4), groups, local=2 / 12, n=12, probe_n=60)
    assert (decide(now, PROBE).action, decide(now, PROBE).group_id) == ("join", "third")


def test_a_drifted_node_whose_new_concepts_group_is_full_founds_from_its_model() -> None:
    # n = 12 validation samples, groups scored on 60. Its old group scores 0.10 on its new
    # data, its new concept's full group 0.90, a third concept's group with room 0.25; its own
    # model 0.92 (on the old data, standing in before its catch-up).
    full = [Candidate("new", 5, 5, 1.0, 0.90), Candidate("third", 2, 5, 2.0, 0.25)]
    d = decide(obs(cur(0.10), full, local=0.92, n=12, probe_n=60, data_changed=True), PROBE)
    assert (d.action, d.group_id, d.seed) == ("found", None, "new"), d.reason
    assert d.reason.startswith("found from full new: it scores 0.900 vs 0.250")
    # Its data unchanged, a full group is never a way out (a leader probes them to blend).
    d = decide(obs(cur(0.10), full, local=0.92, n=12, probe_n=60), PROBE)
    assert d.seed is None and d.reason.startswith("found: local model"), d.reason
    # A full group that serves it worse than its own model by more than 2/12: not seeded from.
    third = [Candidate("third", 5, 5, 1.0, 0.40)]
    d = decide(obs(cur(0.10), third, local=0.60, n=12, probe_n=60, data_changed=True), PROBE)
    assert d.seed is None, d.reason
    assert decide(obs(cur(0.10), third, local=0.56, n=12, probe_n=60, data_changed=True),
                  PROBE).seed == "third"  # fmt: skip
    # No clear gain over the old group (3/60), or over a group with room: not seeded from.
    for current, room in ((0.86, []), (0.10, [Candidate("r", 2, 5, 2.0, 0.86)])):
        d = decide(obs(cur(current), full[:1] + room, local=0.5, n=12, probe_n=60,
                       data_changed=True), PROBE)  # fmt: skip
        assert d.seed is None, d.reason
    # Alone in its group, it founds nothing: a copy of a group is no way out.
    d = decide(obs(cur(0.10, size=1), full, local=0.92, n=12, probe_n=60, data_changed=True),
               PROBE)  # fmt: skip
    assert d.action == "stay", d.reason


def test_lone_member_never_founds_a_copy_of_its_group() -> None:
    d = decide(obs(cur(0.1, size=1), [], local=1.0), PROBE)
    assert d.action == "stay"


def test_found_needs_a_local_model() -> None:
    assert decide(obs(cur(0.1), [], local=None), PROBE).action == "stay"


# --- reported mode ---------------------------------------------------------------------------


def test_reported_mode_switches_on_relative_threshold_only() -> None:
    # 0.63 >= 0.60 x 1.05: the seed's rule ignores the sample noise floor.
    d = decide(obs(cur(0.60), [Candidate("b", 1, 5, 1.0, 0.63)]), REPORTED)
    assert (d.action, d.group_id) == ("join", "b") and "reported" in d.reason
    assert decide(obs(cur(0.60), [Candidate("b", 1, 5, 1.0, 0.62)]), REPORTED).action == "stay"


def test_reported_mode_never_merges_nor_founds() -> None:
    o = obs(cur(0.9, size=2), [Candidate("b", 4, 5, 0.0, 0.9)], local=1.0)
    assert decide(o, REPORTED).action == "stay"


# --- unknown values, bad input --------------------------------------------------------------


def test_unknown_current_accuracy_or_no_validation_stays() -> None:
    c = Candidate("g", 2, 5, 0.0, None, is_current=True)
    assert decide(obs(c, [Candidate("b", 1, 5, 0.0, 1.0)]), PROBE).action == "stay"
    assert decide(obs(cur(0.1), [Candidate("b", 1, 5, 0.0, 1.0)], n=0), PROBE).action == "stay"


def test_unprobed_candidates_are_ignored() -> None:
    d = decide(obs(cur(0.1), [Candidate("b", 4, 5, 0.0, None)], local=0.1), PROBE)
    assert d.action == "stay"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"switch_threshold": -0.1},
        {"switch_threshold": float("nan")},
        {"switch_samples": -1},
        {"merge_samples": 1.5},
        {"found_samples": True},
        {"mode": "gossip"},
    ],
)
def test_bad_params_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PolicyParams(**kwargs)


def test_bad_observations_raise_value_error() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        Candidate("b", 1, 5, 0.0, 1.5)
    with pytest.raises(ValueError, match="capacity"):
        Candidate("b", 1, 0)
    with pytest.raises(ValueError, match="missing"):
        Observation("g", None, 10, (Candidate("b", 1, 5),))
    with pytest.raises(ValueError, match="duplicate"):
        Observation(None, None, 10, (Candidate("b", 1, 5), Candidate("b", 2, 5)))
    with pytest.raises(ValueError, match="val_size"):
        Observation(None, None, -1, ())
    with pytest.raises(ValueError, match="probe_size"):
        Observation(None, None, 10, (), probe_size=9)
    with pytest.raises(ValueError, match="current"):
        Observation("x", None, 10, (Candidate("b", 1, 5, is_current=True),))


# --- compatibility ---------------------------------------------------------------------------


@dataclass
class Rec:
    id: str
    model: str
    dissolved: bool = False


def test_compatible_keeps_same_spec_live_records() -> None:
    recs = [
        Rec("a", "mlp:1x8x8:10"),
        Rec("b", "mlp:1x8x8:3"),
        Rec("c", "mlp:1x8x8:10", dissolved=True),
        Rec("d", "mlp:1x8x8:10"),
    ]
    assert [r.id for r in compatible(recs, "mlp:1x8x8:10")] == ["a", "d"]
    assert compatible(recs, "cnn:1x28x28:10") == []
    with pytest.raises(ValueError):
        compatible(recs, "")


def test_compatible_accepts_gossip_group_records() -> None:
    from mycelium_p2p.groups import GroupRecord

    recs = [
        GroupRecord(id="g-1", model="mlp:1x8x8:10", capacity=5),
        GroupRecord(id="g-2", model="mlp:20:3", capacity=5),
        GroupRecord(id="g-3", model="mlp:1x8x8:10", capacity=5, dissolved=True),
    ]
    assert [r.id for r in compatible(recs, "mlp:1x8x8:10")] == ["g-1"]
