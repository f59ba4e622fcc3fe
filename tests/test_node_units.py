"""Node pieces on their own: scoring probed models, the life cycle, the scheduler."""

from __future__ import annotations

import numpy as np
import pytest

from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.lifecycle import IllegalTransition, Lifecycle, Phase
from mycelium_p2p.node import Node
from mycelium_p2p.node.scheduler import Scheduler, Timer
from mycelium_p2p.node_config import NodeConfig


@pytest.fixture(scope="module")
def node() -> Node:
    return Node(NodeConfig.test(), load_node_data("digits:iid", 0, 4, seed=0), node_id="unit")


def test_a_probed_model_of_the_wrong_shape_or_with_nan_is_refused(node: Node) -> None:
    learner = node.learning
    good = learner.local_parameters()
    assert 0.0 <= learner.score_weights(good) <= 1.0
    with pytest.raises(ValueError, match="shape"):
        learner.score_weights([w[..., :1] for w in good])
    poisoned = [w.copy() for w in good]
    poisoned[0][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        learner.score_weights(poisoned)
    with pytest.raises(ValueError, match="arrays"):
        learner.score_weights(good[:-1])
    with pytest.raises(ValueError):
        learner.score(b"not a model")


def test_life_cycle_allows_only_its_transitions() -> None:
    cycle = Lifecycle()
    assert cycle.move(Phase.DISCOVERING) is Phase.STARTING
    with pytest.raises(IllegalTransition):
        cycle.move(Phase.LEADER)  # a node must join or found first
    for phase in (Phase.JOINING, Phase.LEADER, Phase.JOINING, Phase.MEMBER, Phase.LEAVING):
        cycle.move(phase)
    cycle.move(Phase.STOPPED)
    with pytest.raises(IllegalTransition):
        cycle.move(Phase.DISCOVERING)


def test_the_scheduler_hands_out_due_timers_once_earliest_first() -> None:
    timers = Scheduler()
    timers.at(Timer.EVALUATE, 5.0)
    timers.at(Timer.PEER_LOOKUP, 2.0)
    timers.at(Timer.CHOOSE, 9.0)
    assert timers.next_due() == 2.0
    assert timers.pop_due(1.0) == []
    assert timers.pop_due(6.0) == [Timer.PEER_LOOKUP, Timer.EVALUATE]
    assert timers.pop_due(6.0) == []
    timers.at(Timer.CHOOSE, 3.0)  # set again: moved, not doubled
    assert timers.pop_due(10.0) == [Timer.CHOOSE]
    assert timers.next_due() == float("inf")
