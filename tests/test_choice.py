"""The choice part alone: how many models a choice fetches, and when a member founds a group.

Pure logic with small fakes (a gossip view, a learner whose scores are set by the test, a
gossip port that hands out models by group id); the same part runs in every real node and in
the in-memory network (tests/test_node_logic.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.node.events import FoundGroup, JoinGroup
from mycelium_p2p.node.parts.choice import ChoiceParams, choose, data_changed
from mycelium_p2p.node.scheduler import Scheduler
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

    def __init__(self) -> None:
        self.fetched: list[str] = []

    def request_model(self, address: str, group_id: str, timeout: float) -> tuple[int, bytes]:
        self.fetched.append(group_id)
        return 1, group_id.encode()


class Learner:
    """Scores set by the test: each group's model, this node's own and its group's."""

    spec = SPEC
    val_size = 50

    def __init__(self, scores: dict[str, float], local: float, group: float) -> None:
        self.scores, self.local, self.group = scores, local, group

    def train_local(self) -> float:
        return self.local

    def group_accuracy(self) -> float:
        return self.group

    def score(self, payload: bytes) -> float:
        return self.scores[payload.decode()]


def record(group_id: str, members: tuple[str, ...], capacity: int = 5) -> GroupRecord:
    return GroupRecord(
        id=group_id,
        leader=members[0],
        leader_address=f"{members[0]}:1",
        members=members,
        model=SPEC,
        capacity=capacity,
        round=1,
    )


def world(groups: dict[str, tuple[str, ...]]) -> GossipView:
    members: list[Any] = [
        Member(m, f"{m}:1", "alive", g) for g, ids in groups.items() for m in ids if m != "me"
    ]
    return GossipView("me", members, {g: record(g, ids) for g, ids in groups.items()})


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
