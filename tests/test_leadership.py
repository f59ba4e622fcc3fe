"""Who claims a group whose leader is gone, and when (``leadership.follow``, pure)."""

from __future__ import annotations

import math

import pytest

from mycelium_p2p.node.events import Claim
from mycelium_p2p.node.parts import leadership
from mycelium_p2p.node.parts.leadership import LeadershipParams
from mycelium_p2p.node.state import GossipView, NodeState
from tests.test_choice import SPEC, Member, record


def _claims_at(*, holds_model: bool, data_changed: bool) -> float:
    """When "me", second of three live members, claims the group of a leader that is gone."""
    group = record("mine", ("boss", "a1", "me", "z9"))
    members = [Member(m, f"{m}:1", "alive", "mine") for m in ("a1", "me", "z9")]
    view = GossipView("me", members, {"mine": group})  # type: ignore[arg-type]
    state = NodeState("me", "me", SPEC, group_id="mine")
    state.term, state.data_changed = group.term, data_changed
    params = LeadershipParams(grace=5.0, rank_delay=3.0)
    for step in range(200):
        now = step * 0.5
        commands = leadership.follow(state, view, params, now, holds_model=holds_model)
        if any(isinstance(c, Claim) for c in commands):
            return now
    return math.inf


@pytest.mark.parametrize(
    ("holds_model", "data_changed", "at"),
    [
        (True, False, 5.0 + 1 * 3.0),  # the grace, then its rank's head start
        # After every other member: it would restart the group from another group's model, or
        # its data no longer speaks for the group's and it is about to leave it.
        (False, False, 5.0 + 4 * 3.0),
        (True, True, 5.0 + 4 * 3.0),
    ],
)
def test_a_member_claims_after_its_grace_and_rank(
    holds_model: bool, data_changed: bool, at: float
) -> None:
    assert _claims_at(holds_model=holds_model, data_changed=data_changed) == at
