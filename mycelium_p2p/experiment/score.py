"""Scoring a run over time: the timeline's samples, the time to target, recovery from drift.

A :class:`Sample` is one look at the network: every live node's group and accuracy (its current
group model on its own test split) and concept. From the samples and the baselines:

- ``seconds_to_target``: the first sample where the mean accuracy is at least the oracle's
  minus ``TARGET_GAP`` and the purity at least ``TARGET_PURITY`` (None: never, or no oracle);
- ``recovered_seconds`` (drift): per drifted node, seconds from the drift to the first sample
  where it sits in a group whose other members all share its new concept and its accuracy is
  within ``TARGET_GAP`` of its own accuracy in the oracle's groups (None: never);
- ``placed_seconds`` (late arrivals): per late node, seconds from its start to the first sample
  where it sits in a group whose other members all share its concept (None: never).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mycelium_p2p.experiment.baselines import BaselineResult

TARGET_GAP = 0.03
TARGET_PURITY = 0.9


@dataclass(frozen=True)
class Sample:
    """One look at the network (see the module docstring)."""

    seconds: float
    mean_accuracy: float
    purity: float | None
    groups: int
    migrations: int
    nodes: Mapping[int, tuple[str | None, float]]  # node index -> (group, accuracy)
    concepts: Mapping[int, int | None]

    def to_json(self) -> dict[str, Any]:
        """The timeline entry: seconds, mean accuracy, purity, groups, migrations so far."""
        return {
            "seconds": round(self.seconds, 1),
            "mean_accuracy": round(self.mean_accuracy, 4),
            "purity": None if self.purity is None else round(self.purity, 4),
            "groups": self.groups,
            "migrations": self.migrations,
        }

    def among_kin(self, index: int) -> bool:
        """Whether node ``index`` is in a group whose other members all share its concept."""
        group = self.nodes[index][0]
        if group is None:
            return False
        mine = self.concepts[index]
        return all(
            self.concepts[j] == mine
            for j, (g, _) in self.nodes.items()
            if g == group and j != index
        )


@dataclass(frozen=True)
class Scores:
    """What :func:`score_run` found."""

    seconds_to_target: float | None
    recovered_seconds: dict[str, float | None]
    placed_seconds: dict[int, float | None]


def score_run(
    samples: Sequence[Sample],
    kept: Sequence[int],
    baselines: Mapping[str, BaselineResult],
    *,
    names: Sequence[str],
    drift_at: float | None = None,
    drifted: Sequence[int] = (),
    arrived: Mapping[int, float] | None = None,
) -> Scores:
    """Score the samples of a run (see the module docstring).

    Parameters
    ----------
    samples
        The run's samples, in time order.
    kept
        Indices of the nodes alive at the end, in the order the baselines saw them.
    baselines
        The baselines' results (``oracle`` gives the targets; without it the accuracy
        conditions are left out and ``seconds_to_target`` is None).
    names
        Every node's name, by index.
    drift_at, drifted
        When the data drifted, and which nodes (indices).
    arrived
        Late nodes' indices and the seconds they started at.
    """
    oracle = baselines.get("oracle")
    target = None
    if oracle is not None:
        for s in samples:
            if (
                s.purity is not None
                and s.purity >= TARGET_PURITY
                and (s.mean_accuracy >= oracle.mean - TARGET_GAP)
            ):
                target = round(s.seconds, 1)
                break
    own_oracle = {i: oracle.accuracies[k] for k, i in enumerate(kept)} if oracle else {}
    recovered: dict[str, float | None] = {}
    for i in drifted:
        recovered[names[i]] = None
        if drift_at is None:
            continue
        for s in samples:
            if s.seconds < drift_at or i not in s.nodes or not s.among_kin(i):
                continue
            if i in own_oracle and s.nodes[i][1] < own_oracle[i] - TARGET_GAP:
                continue
            recovered[names[i]] = round(s.seconds - drift_at, 1)
            break
    placed: dict[int, float | None] = {}
    for i, at in (arrived or {}).items():
        placed[i] = next(
            (round(s.seconds - at, 1) for s in samples if s.seconds >= at and i in s.nodes
             and s.among_kin(i)),
            None,
        )  # fmt: skip
    return Scores(target, recovered, placed)
