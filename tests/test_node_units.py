"""Node pieces that need no network: scoring probed models, the life cycle rules."""

from __future__ import annotations

import numpy as np
import pytest

from mycelium_p2p.learning import models
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.lifecycle import IllegalTransition, Lifecycle, Phase
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig


@pytest.fixture(scope="module")
def node() -> Node:
    return Node(NodeConfig.test(), load_node_data("digits:iid", 0, 4, seed=0), node_id="unit")


def test_a_probed_model_of_the_wrong_shape_or_with_nan_is_refused(node: Node) -> None:
    good = models.get_weights(node.local_model)
    assert 0.0 <= node._score(good, node.data.val) <= 1.0
    with pytest.raises(ValueError, match="shape"):
        node._score([w[..., :1] for w in good], node.data.val)
    poisoned = [w.copy() for w in good]
    poisoned[0][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        node._score(poisoned, node.data.val)
    with pytest.raises(ValueError, match="arrays"):
        node._score(good[:-1], node.data.val)


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
