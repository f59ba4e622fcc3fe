"""The choice part alone: how many models a choice fetches, and when a member founds a group.

Pure logic with small fakes (a gossip view, a learner whose scores are set by the test, a
gossip port that hands out models by group id); the same part runs in every real node and in
the in-memory network (tests/test_node_logic.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.limits import MAX_REASON
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.node.events import Announce, FoundGroup, JoinGroup
from mycelium_p2p.node.parts.choice import (
    MAX_UNSCORED_WAITS,
    Attempt,
    ChoiceParams,
    choose,
    data_changed,
    on_attempt,
    refused,
)
from mycelium_p2p.node.scheduler import Scheduler, Timer
from mycelium_p2p.node.state import GossipView, NodeState

SPEC = "fake:concepts:10"


@dataclass
class Member:
    id: str
    address: str
    status: str
    group: str

    @property
    def node_meta(self) -> NodeMeta:
        return NodeMeta(name=self.id, group=self.group, model=SPEC)


class Models:
    """The gossip port's model requests: a group's model is its id; every fetch is counted."""

    def __init__(self, silent: tuple[str, ...] = ()) -> None:
        self.fetched: list[str] = []
        self.silent = silent  # groups whose leader does not answer

    def request_model(
        self, address: str, group_id: str, timeout: float
    ) -> tuple[int, bytes] | None:
        self.fetched.append(group_id)
        return None if group_id in self.silent else (1, group_id.encode())


class Learner:
    """Scores set by the test: each group's model, this node's own and its group's."""

    spec = SPEC
    val_size = 50

    def __init__(
        self,
        scores: dict[str, float],
        local: float,
        group: float,
        with_train: dict[str, float] | None = None,
    ) -> None:
        self.scores, self.local, self.group = scores, local, group
        self.with_train = with_train or {}  # scores with the training split, by group ("": own)
        self.blended: list[dict[str, float]] = []
        self.trained = 0  # calls of train_local

    def train_local(self) -> float:
        self.trained += 1
        return self.local

    def probe_size(self, *, with_train: bool = False) -> int:
        return 5 * self.val_size if with_train else self.val_size

    def group_accuracy(self, *, with_train: bool = False) -> float:
        return self.with_train.get("", self.group) if with_train else self.group

    def score(self, payload: bytes, *, with_train: bool = False) -> float:
        group = payload.decode()
        return self.with_train.get(group, self.scores[group]) if with_train else self.scores[group]

    def blend(self, shared: list[tuple[bytes, float]]) -> None:
        self.blended.append({payload.decode(): weight for payload, weight in shared})


def record(
    group_id: str, members: tuple[str, ...], capacity: int = 5, round_: int = 1
) -> GroupRecord:
    return GroupRecord(
        id=group_id,
        leader=members[0],
        leader_address=f"{members[0]}:1",
        members=members,
        model=SPEC,
        capacity=capacity,
        round=round_,
    )


def world(groups: dict[str, tuple[str, ...]], round_: int = 1) -> GossipView:
    members: list[Any] = [
        Member(m, f"{m}:1", "alive", g) for g, ids in groups.items() for m in ids if m != "me"
    ]
    records = {g: record(g, ids, round_=round_) for g, ids in groups.items()}
    return GossipView("me", members, records)


def test_a_choice_fetches_at_most_max_probes_models_and_keeps_the_best_it_found() -> None:
    groups = {f"g{i:02d}": (f"n{i:02d}",) for i in range(30)}
    groups["mine"] = ("peer", "me")
    scores = {g: 0.1 for g in groups} | {"g17": 0.9}  # one group serves this node's data
    learner = Learner(scores, local=0.5, group=0.1)
    models, state = Models(), NodeState("me", "me", SPEC, group_id="mine")
    params, rng, timers = ChoiceParams(max_probes=4), random.Random(5), Scheduler()
    seen_g17_at = None
    for evaluation in range(12):
        models.fetched.clear()
        commands = choose(
            state, world(groups), params, models, learner, rng, timers, 0.0, first=False
        )
        assert len(models.fetched) <= 4  # 30 groups with room, 4 fetches
        if "g17" in models.fetched and seen_g17_at is None:
            seen_g17_at = evaluation
        if any(isinstance(c, JoinGroup) for c in commands):
            break
    # Exploration reaches the one good group within a few choices, and the node moves there.
    assert seen_g17_at is not None
    assert [c.group_id for c in commands if isinstance(c, JoinGroup)] == ["g17"]
    assert state.most_probes <= 4


def test_without_a_bound_every_group_with_room_is_fetched() -> None:
    groups = {f"g{i:02d}": (f"n{i:02d}",) for i in range(30)}
    groups["full"] = ("f1", "f2", "f3", "f4", "f5")  # capacity 5: no room, never fetched
    groups["mine"] = ("peer", "me")
    learner = Learner({g: 0.1 for g in groups}, local=0.5, group=0.5)
    models, state = Models(), NodeState("me", "me", SPEC, group_id="mine")
    params = ChoiceParams(max_probes=1000)
    choose(state, world(groups), params, models, learner, random.Random(1), Scheduler(), 0.0,
           first=False)  # fmt: skip
    assert sorted(models.fetched) == sorted(f"g{i:02d}" for i in range(30))


def test_a_join_carries_the_groups_model_fetched_even_when_scored_from_the_cache() -> None:
    # The new member holds it as the group's until the group's first round reaches it.
    groups = {"mine": ("peer", "me"), "new": ("n1", "n2")}
    learner = Learner({"new": 0.9}, local=0.5, group=0.5)
    state = NodeState("me", "me", SPEC, group_id="mine")
    state.probes["new"] = (1, 0.9)  # its round 1 scored before: no fetch needed to decide
    models = Models()
    commands = choose(state, world(groups), ChoiceParams(), models, learner, random.Random(1),
                      Scheduler(), 0.0, first=False)  # fmt: skip
    joins = [c for c in commands if isinstance(c, JoinGroup)]
    assert [(c.group_id, c.model) for c in joins] == [("new", (1, b"new"))]
    assert models.fetched == ["new"]
    # A leader that does not answer the fetch: the join goes on, with no model to hold.
    state = NodeState("me", "me", SPEC, group_id="mine")
    state.probes["new"] = (1, 0.9)
    commands = choose(state, world(groups), ChoiceParams(), Models(silent=("new",)), learner,
                      random.Random(1), Scheduler(), 0.0, first=False)  # fmt: skip
    joins = [c for c in commands if isinstance(c, JoinGroup)]
    assert [(c.group_id, c.model) for c in joins] == [("new", None)]


def test_a_member_founds_only_when_two_evaluations_in_a_row_say_so() -> None:
    groups = {"mine": ("peer", "me")}  # led by its peer
    learner = Learner({}, local=0.95, group=0.50)  # its own model far ahead of its group's
    state = NodeState("me", "me", SPEC, group_id="mine")
    params, rng, timers = ChoiceParams(), random.Random(1), Scheduler()

    def evaluate() -> list[Any]:
        return choose(state, world(groups), params, Models(), learner, rng, timers, 0.0,
                      first=False)  # fmt: skip

    assert not any(isinstance(c, FoundGroup) for c in evaluate())  # once: maybe noise
    assert "founding if the next evaluation agrees" in state.decisions[-1].reason
    learner.group = 0.94  # the group's model recovered: the found is forgotten
    assert not any(isinstance(c, FoundGroup) for c in evaluate())
    learner.group = 0.50
    assert not any(isinstance(c, FoundGroup) for c in evaluate())
    assert any(isinstance(c, FoundGroup) for c in evaluate())  # twice in a row: found


def test_a_member_whose_data_changed_founds_at_once() -> None:
    groups = {"mine": ("peer", "me")}
    learner = Learner({}, local=0.95, group=0.10)  # its new data: the group's model is lost
    state = NodeState("me", "me", SPEC, group_id="mine")
    timers = Scheduler()
    data_changed(state, timers, 0.0)
    commands = choose(state, world(groups), ChoiceParams(), Models(), learner, random.Random(1),
                      timers, 0.0, first=False)  # fmt: skip
    assert any(isinstance(c, FoundGroup) for c in commands)


def test_a_drifted_member_joins_its_new_concepts_group_before_its_own_model_trains() -> None:
    """Catching the own model up with new data takes several fits; the join does not need it."""
    groups = {"mine": ("peer", "me"), "new": ("n1", "n2")}
    learner = Learner({"new": 0.95}, local=0.90, group=0.10)
    state, timers = NodeState("me", "me", SPEC, group_id="mine"), Scheduler()
    state.local_accuracy = 0.90  # its own model, on the old data
    data_changed(state, timers, 0.0)
    commands = choose(state, world(groups), ChoiceParams(), Models(), learner,
                      random.Random(1), timers, 0.0, first=False)  # fmt: skip
    assert [c.group_id for c in commands if isinstance(c, JoinGroup)] == ["new"]
    assert learner.trained == 0
    on_attempt(state, Attempt.MOVED, ChoiceParams(), random.Random(1), timers, 0.0,
               first=False)  # fmt: skip
    choose(state, world(groups), ChoiceParams(), Models(), learner, random.Random(1), timers,
           1.0, first=False)  # fmt: skip
    assert learner.trained == 1  # the next look trains it (the learner catches up then)


def test_a_drifted_member_whose_join_is_refused_tries_again_before_its_own_model_trains() -> None:
    """Drifters look at once, and a group can still be full of nodes that drift away."""
    learner = Learner({"new": 0.95}, local=0.90, group=0.10)
    state, timers, rng = NodeState("me", "me", SPEC, group_id="mine"), Scheduler(), random.Random(1)
    state.local_accuracy = 0.90
    data_changed(state, timers, 0.0)
    before = {"mine": ("peer", "me"), "new": ("n1", "n2", "leaving")}
    commands = choose(state, world(before), ChoiceParams(), Models(), learner, rng, timers, 0.0,
                      first=False)  # fmt: skip
    assert [c.group_id for c in commands if isinstance(c, JoinGroup)] == ["new"]
    refused(state, world(before).groups["new"])  # the registry: full
    on_attempt(state, Attempt.REFUSED, ChoiceParams(), rng, timers, 0.0, first=False)
    after = {"mine": ("peer", "me"), "new": ("n1", "n2")}  # the drifter left
    commands = choose(state, world(after), ChoiceParams(), Models(), learner, rng, timers, 0.5,
                      first=False)  # fmt: skip
    assert [c.group_id for c in commands if isinstance(c, JoinGroup)] == ["new"]
    assert learner.trained == 0


def test_a_drifted_member_refused_by_a_full_group_founds_from_its_model() -> None:
    """The registry says the group is full and no one leaves it: the node founds from its model
    at the second look (the first would be a fork of a group about to have room)."""
    learner = Learner({"new": 0.95}, local=0.60, group=0.10)
    state, timers, rng = NodeState("me", "me", SPEC, group_id="mine"), Scheduler(), random.Random(1)
    state.local_accuracy = 0.90
    data_changed(state, timers, 0.0)
    groups = {"mine": ("peer", "me"), "new": ("n1", "n2", "n3", "n4")}  # a stale view: room
    commands = choose(state, world(groups), ChoiceParams(), Models(), learner, rng, timers, 0.0,
                      first=False)  # fmt: skip
    assert [c.group_id for c in commands if isinstance(c, JoinGroup)] == ["new"]
    refused(state, world(groups).groups["new"])  # the registry: full
    on_attempt(state, Attempt.REFUSED, ChoiceParams(), rng, timers, 0.0, first=False)
    for now in (0.5, 1.2):
        commands = choose(state, world(groups), ChoiceParams(), Models(), learner, rng, timers,
                          now, first=False)  # fmt: skip
    found = [c for c in commands if isinstance(c, FoundGroup)]
    assert [(g, w) for f in found for g, _, w in f.blend] == [("new", 1.0)]
    assert learner.trained == 0 and not any(isinstance(c, JoinGroup) for c in commands)


def test_a_drifted_member_decides_anything_but_a_join_on_its_caught_up_model() -> None:
    """Its new concept has no group with room: a group of a third concept beats its old one,
    but its own model on the old data (standing in at the first look) and on the new data
    (caught up, before it acts) beats both by a margin. It founds, never joining the third."""
    groups = {"mine": ("peer", "me"), "third": ("t1",)}
    learner = Learner({"third": 0.30}, local=0.85, group=0.10)
    state, timers = NodeState("me", "me", SPEC, group_id="mine"), Scheduler()
    state.local_accuracy = 0.90
    data_changed(state, timers, 0.0)
    commands = choose(state, world(groups), ChoiceParams(), Models(), learner,
                      random.Random(1), timers, 0.0, first=False)  # fmt: skip
    assert not any(isinstance(c, JoinGroup) for c in commands)
    assert any(isinstance(c, FoundGroup) for c in commands)
    assert learner.trained == 1 and state.local_accuracy == 0.85
    assert "local model 0.850" in state.decisions[-1].reason


def test_a_member_whose_data_changed_scores_groups_with_its_training_split_too() -> None:
    """Concepts that share half their labels: 9 of the node's 12 validation samples carry
    those, and the old group and the new concept's group both score 0.75 there. No group has
    trained on the new training split: with it the groups score 0.70 and 0.85, a gain of nine
    samples in 60 (less than three in 12: the thresholds count the samples scored)."""
    groups = {"mine": ("peer", "me"), "new": ("n1", "n2")}
    learner = Learner({"new": 0.75}, local=0.85, group=0.75,
                      with_train={"new": 0.85, "": 0.70})  # fmt: skip
    learner.val_size = 12

    def choose_once(changed: bool) -> list[Any]:
        state, timers = NodeState("me", "me", SPEC, group_id="mine"), Scheduler()
        if changed:
            data_changed(state, timers, 0.0)
        return choose(state, world(groups), ChoiceParams(), Models(), learner,
                      random.Random(1), timers, 0.0, first=False)  # fmt: skip

    assert [c.group_id for c in choose_once(True) if isinstance(c, JoinGroup)] == ["new"]
    # The same node without a data change: its group's model trained on that split.
    assert not any(isinstance(c, JoinGroup) for c in choose_once(False))


def test_a_reason_sent_to_the_registry_fits_its_bound_whatever_the_group_ids() -> None:
    """A merge's reason names two groups; with ids of 64 characters (the most a record has) it
    would be longer than the registry takes, and the join would be refused as bad input."""
    mine, big = "m" * 64, "b" * 64
    groups = {mine: ("peer", "me"), big: ("b1", "b2", "b3")}
    learner = Learner({big: 0.90}, local=0.90, group=0.90)
    state = NodeState("me", "me", SPEC, group_id=mine)
    commands = choose(state, world(groups), ChoiceParams(), Models(), learner, random.Random(1),
                      Scheduler(), 0.0, first=False)  # fmt: skip
    joins = [c for c in commands if isinstance(c, JoinGroup)]
    assert [c.group_id for c in joins] == [big] and joins[0].reason.startswith("merge")
    assert len(state.decisions[-1].reason) > MAX_REASON >= len(joins[0].reason)


def _leader(group: str = "mine") -> NodeState:
    state = NodeState("me", "me", SPEC, group_id=group)
    state.server_address = "me:2"  # it runs its group's server
    return state


BLEND_WORLD = {
    "mine": ("me", "m2", "m3"),
    "twin": ("t1", "t2", "t3", "t4", "t5"),  # full: no one can join it, yet it is probed
    "small": ("s1", "s2"),
    "other": ("o1", "o2"),  # another kind of data
}
# On the leader's 50 validation samples: its group 0.90, the twin as good, the small group one
# sample lower (within merge_samples = 2), the other kind far lower.
BLEND_SCORES = {"twin": 0.90, "small": 0.88, "other": 0.20}


def test_a_leader_mixes_in_the_groups_that_serve_its_data_as_well_once_per_round() -> None:
    learner = Learner(BLEND_SCORES, local=0.5, group=0.90)
    state, models = _leader(), Models()
    params, rng, timers = ChoiceParams(), random.Random(3), Scheduler()
    choose(state, world(BLEND_WORLD), params, models, learner, rng, timers, 0.0, first=False)
    assert "twin" in models.fetched  # full groups are probed by a leader
    # Half of the model (the bound) from 7 peers' members against its own 3, by their sizes.
    assert len(learner.blended) == 1
    assert learner.blended[0] == pytest.approx({"twin": 0.5 * 5 / 7, "small": 0.5 * 2 / 7})
    assert state.blended == {"twin": 1, "small": 1} and state.decisions[-1].action == "stay"
    # The same rounds again: already mixed in, nothing fetched or mixed.
    models.fetched.clear()
    choose(state, world(BLEND_WORLD), params, models, learner, rng, timers, 0.0, first=False)
    assert models.fetched == [] and len(learner.blended) == 1
    # Newer rounds: mixed in again.
    choose(state, world(BLEND_WORLD, round_=2), params, models, learner, rng, timers, 0.0,
           first=False)  # fmt: skip
    assert len(learner.blended) == 2


def test_a_leader_follows_its_kin_while_some_group_serves_it_as_well() -> None:
    # Founded from a full group's model, it trains nothing of its own in while alone there and
    # some group serves its data about as well, fetched afresh or scored from the cache.
    learner = Learner(BLEND_SCORES, local=0.5, group=0.90)
    state, models = _leader(), Models()
    state.follows_kin = True
    params, rng, timers = ChoiceParams(), random.Random(3), Scheduler()
    choose(state, world(BLEND_WORLD), params, models, learner, rng, timers, 0.0, first=False)
    assert state.follows_kin and len(learner.blended) == 1
    choose(state, world(BLEND_WORLD), params, models, learner, rng, timers, 0.0, first=False)
    assert state.follows_kin and len(learner.blended) == 1  # nothing new, still its kin
    learner.scores = {g: 0.2 for g in BLEND_SCORES}  # none serves it any more: for good
    choose(state, world(BLEND_WORLD, round_=2), params, models, learner, rng, timers, 0.0,
           first=False)  # fmt: skip
    assert not state.follows_kin
    learner.scores = dict(BLEND_SCORES)
    choose(state, world(BLEND_WORLD, round_=3), params, models, learner, rng, timers, 0.0,
           first=False)  # fmt: skip
    assert not state.follows_kin and len(learner.blended) == 2


def test_a_leader_whose_data_changed_mixes_nothing_into_its_group() -> None:
    """A drifted leader whose new concept's groups are full stays a while (it waits to score a
    group, or to confirm founding). Its data no longer speaks for its group's: mixing in what
    serves its new data turned its members' model into another concept's (24 nodes: the old
    group's members scored their model 1.0, then left it one by one)."""
    learner = Learner(BLEND_SCORES, local=0.5, group=0.90)
    state, models, timers = _leader(), Models(), Scheduler()
    data_changed(state, timers, 0.0)
    choose(state, world(BLEND_WORLD), ChoiceParams(), models, learner, random.Random(3), timers,
           0.0, first=False)  # fmt: skip
    assert "twin" in models.fetched  # probed all the same: it may found from that model
    assert learner.blended == [] and state.blended == {}


def test_a_group_that_refused_this_leader_is_still_mixed_in_but_never_joined() -> None:
    # A drifted leader was refused by its new concept's only group (full), and founded a
    # group: that group's model is the best it can have, through blending.
    groups = {"mine": ("me", "m1"), "kin": ("k1", "k2", "k3"), "other": ("o1", "o2")}
    learner = Learner({"kin": 0.95, "other": 0.10}, local=0.90, group=0.90)
    state = _leader()
    refused(state, world(groups).groups["kin"])
    choose(state, world(groups), ChoiceParams(), Models(), learner, random.Random(3),
           Scheduler(), 0.0, first=False)  # fmt: skip
    assert state.blended == {"kin": 1}
    # A member (it does not blend) neither probes nor joins it until its record changes.
    state, models = NodeState("me", "me", SPEC, group_id="mine"), Models()
    groups["mine"] = ("m1", "me")  # led by m1
    learner.group = 0.10  # its group no longer serves it; "kin" would
    refused(state, world(groups).groups["kin"])
    commands = choose(state, world(groups), ChoiceParams(), models, learner,
                      random.Random(3), Scheduler(), 0.0, first=False)  # fmt: skip
    assert "kin" not in models.fetched
    assert not any(isinstance(c, JoinGroup) and c.group_id == "kin" for c in commands)


def test_a_drifted_member_whose_new_concepts_group_is_full_founds_from_that_groups_model() -> None:
    """Before its own model has trained on the new data, once a second look within a second
    agrees: the new group starts from the full group's model, nothing of its own."""
    groups = {"mine": ("m1", "me"), "kin": ("k1", "k2", "k3", "k4", "k5")}  # kin: full
    learner = Learner({"kin": 0.95}, local=0.80, group=0.10)

    def look(state: NodeState, timers: Scheduler, now: float, models: Models) -> list[Any]:
        return choose(state, world(groups), ChoiceParams(), models, learner, random.Random(1),
                      timers, now, first=False)  # fmt: skip

    state, timers = NodeState("me", "me", SPEC, group_id="mine"), Scheduler()
    state.local_accuracy = 0.90  # its own model, on the old data
    data_changed(state, timers, 0.0)
    assert look(state, timers, 0.0, Models()) == [Announce()] and state.found_pending
    assert (timers.when(Timer.EVALUATE) or 9.0) <= 1.0
    found = [c for c in look(state, timers, 1.0, Models()) if isinstance(c, FoundGroup)]
    assert len(found) == 1 and [(g, w) for g, _, w in found[0].blend] == [("kin", 1.0)]
    assert learner.trained == 0 and found[0].reason.startswith("found from full kin")
    # A member of "kin" drifted away meanwhile: the node joins "kin" instead.
    state, timers = NodeState("me", "me", SPEC, group_id="mine"), Scheduler()
    state.local_accuracy = 0.90
    data_changed(state, timers, 0.0)
    look(state, timers, 0.0, Models())
    groups["kin"] = ("k1", "k2", "k3", "k4")
    commands = look(state, timers, 1.0, Models())
    assert [c.group_id for c in commands if isinstance(c, JoinGroup)] == ["kin"]
    groups["kin"] = ("k1", "k2", "k3", "k4", "k5")
    # The model of a round of "kin" scored at an earlier look (not kept) is fetched again.
    state, models = NodeState("me", "me", SPEC, group_id="mine"), Models()
    data_changed(state, timers, 0.0)
    state.found_pending = True
    state.probes["kin"] = (1, 0.95)
    found = [c for c in look(state, timers, 1.0, models) if isinstance(c, FoundGroup)]
    assert models.fetched == ["kin"] and [g for g, _, _ in found[0].blend] == ["kin"]
    # Its own model (caught up) serves it better than "kin" by more than 2/50: it founds from
    # its own, and mixes in nothing of "kin".
    learner = Learner({"kin": 0.95}, local=1.0, group=0.10)
    state = NodeState("me", "me", SPEC, group_id="mine")
    data_changed(state, timers, 0.0)
    state.local_stale = False
    commands = choose(state, world(groups), ChoiceParams(), Models(), learner,
                      random.Random(1), timers, 0.0, first=False)  # fmt: skip
    found = [c for c in commands if isinstance(c, FoundGroup)]
    assert len(found) == 1 and found[0].blend == () and learner.trained == 1
    # Its data unchanged, a member neither probes full groups nor founds from them.
    state, models = NodeState("me", "me", SPEC, group_id="mine"), Models()
    for _ in range(2):  # two evaluations in a row: it founds
        commands = choose(state, world(groups), ChoiceParams(), models, learner,
                          random.Random(1), timers, 0.0, first=False)  # fmt: skip
    found = [c for c in commands if isinstance(c, FoundGroup)]
    assert "kin" not in models.fetched and len(found) == 1 and found[0].blend == ()


@pytest.mark.parametrize("who", ["member", "blend_weight 0"])
def test_members_and_leaders_told_not_to_never_mix_in_other_groups(who: str) -> None:
    learner = Learner(BLEND_SCORES, local=0.5, group=0.90)
    groups = dict(BLEND_WORLD)
    if who == "member":
        groups["mine"] = ("m2", "me", "m3")  # led by m2
        state, params = NodeState("me", "me", SPEC, group_id="mine"), ChoiceParams()
    else:
        state, params = _leader(), ChoiceParams(blend_weight=0)
    models = Models()
    choose(state, world(groups), params, models, learner, random.Random(3), Scheduler(), 0.0,
           first=False)  # fmt: skip
    assert learner.blended == [] and not state.blended
    assert "twin" not in models.fetched  # full groups are not probed either


def test_a_young_group_near_chance_mixes_in_nothing_near_chance() -> None:
    # A group founded a moment ago scores near chance, as does every model of other data; the
    # leader's own model, trained on its data, sets the bar.
    chance = {"twin": 0.10, "small": 0.10, "other": 0.12}
    learner = Learner(chance, local=0.90, group=0.12)
    state = _leader()
    choose(state, world(BLEND_WORLD), ChoiceParams(), Models(), learner, random.Random(3),
           Scheduler(), 0.0, first=False)  # fmt: skip
    assert learner.blended == [] and not state.blended


def test_a_member_whose_join_is_refused_looks_again_within_a_second() -> None:
    state, timers = NodeState("me", "me", SPEC, group_id="mine"), Scheduler()
    on_attempt(state, Attempt.REFUSED, ChoiceParams(evaluation_interval=60.0),
               random.Random(1), timers, 100.0, first=False)  # fmt: skip
    assert (timers.when(Timer.EVALUATE) or 1e9) <= 101.0


def test_a_drifted_member_waits_for_a_group_that_did_not_answer_before_founding() -> None:
    groups = {"mine": ("peer", "me"), "quiet": ("q1",)}  # quiet: its leader just left
    learner = Learner({}, local=0.60, group=0.10)  # new data: its group's model is lost
    state, timers, rng = NodeState("me", "me", SPEC, group_id="mine"), Scheduler(), random.Random(1)
    data_changed(state, timers, 0.0)
    for wait in range(MAX_UNSCORED_WAITS):
        commands = choose(state, world(groups), ChoiceParams(), Models(silent=("quiet",)),
                          learner, rng, timers, float(wait), first=False)  # fmt: skip
        assert not any(isinstance(c, FoundGroup | JoinGroup) for c in commands)
        assert "first scoring quiet" in state.decisions[-1].reason
        assert (timers.when(Timer.EVALUATE) or 1e9) <= wait + 1.0  # looks again within 1 s
        assert learner.trained == 0  # nor does it spend the catch-up's fits meanwhile
    # It does not wait forever: after a few looks it founds, as a drifted node does at once.
    commands = choose(state, world(groups), ChoiceParams(), Models(silent=("quiet",)), learner,
                      rng, timers, 9.0, first=False)  # fmt: skip
    assert any(isinstance(c, FoundGroup) for c in commands) and learner.trained == 1
