"""The baselines of an experiment, on the same shards and training budget as the run.

A run of ``R`` rounds with ``E`` local epochs per round gives every baseline the same budget:

``global``
    One FedAvg model over all nodes (what a single federation would learn).
``alone``
    Every node trains its own model for ``R * E`` epochs, in ``R`` chunks of ``E``.
``oracle``
    FedAvg within the true concept groups, each split into balanced chunks of at most
    ``capacity`` nodes (the fair reference when groups are capped).
``ifca``
    IFCA (Ghosh et al., 2020, "An Efficient Framework for Clustered Federated Learning"), the
    published clustered-FL method: a central server keeps ``k`` models (``k`` given: the true
    number of concepts); every round each node takes the model with the lowest loss on its
    own training data, trains it ``E`` epochs, and the server averages, per model, the updates
    of the nodes that took it (weighted by examples; a model nobody took stays as it was).
    Models start from ``k`` different random initialisations. A node's figure is the model it
    would take after the last round.

All baselines train together, one vectorised step for every copy of every baseline (see
``engine.py``), so that they cost a fraction of the run they are compared with. Each returns
every node's accuracy on its own test split, their mean, a per-round history of the mean, and
its share of the wall time. The history holds the mean after every round, or after every
``history_every`` rounds when there are more than ``HISTORY_POINTS`` (scoring is a third of
the cost of a round).

When the run drifted (some nodes switched data at round ``D``), the baselines switch the same
nodes' data at the same round: ``alone``, ``global`` and ``ifca`` go on training, the
``oracle`` regroups by the new concepts (each new group starting from the model of the old group
that shared most of its members).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mycelium_p2p.experiment.engine import BatchEngine, Stack
from mycelium_p2p.experiment.scenarios import (  # noqa: F401  (the names' old home)
    SCENARIOS,
    ExperimentData,
    load_scenario,
    load_shards,
    scenario_spec,
)
from mycelium_p2p.learning.data import NodeData

BASELINES = ("global", "alone", "oracle", "ifca")
#: At most this many points of history: scoring every copy on every test split costs a third of
#: a round, so long runs score every ``ceil(rounds / HISTORY_POINTS)`` rounds (and the last).
HISTORY_POINTS = 100


@dataclass
class BaselineResult:
    """Per-node test accuracy of a baseline, its mean, per-round history and wall time."""

    name: str
    accuracies: list[float]
    mean: float
    seconds: float
    history: list[float] = field(default_factory=list)
    groups: int = 0
    history_every: int = 1

    def to_json(self) -> dict:
        """JSON-friendly summary."""
        return {
            "mean_accuracy": round(self.mean, 4),
            "accuracies": [round(a, 4) for a in self.accuracies],
            "groups": self.groups,
            "seconds": round(self.seconds, 3),
            "history": [round(a, 4) for a in self.history],
            "history_every": self.history_every,
        }


def oracle_groups(concepts: Sequence[int | None], capacity: int) -> list[list[int]]:
    """True concept groups, each split into balanced chunks of at most ``capacity`` nodes."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if any(c is None for c in concepts):
        raise ValueError("the oracle needs every node's concept (an npz shard lacks 'concept')")
    by_concept: dict[int, list[int]] = {}
    for i, c in enumerate(concepts):
        by_concept.setdefault(int(c), []).append(i)  # type: ignore[arg-type]
    groups: list[list[int]] = []
    for c in sorted(by_concept):
        members = by_concept[c]
        chunks = math.ceil(len(members) / capacity)
        groups.extend(list(map(int, part)) for part in np.array_split(members, chunks))
    return groups


# --- one baseline: which model each node trains from, and how the copies come back ---------


class _Baseline:
    """Models, and which one each node starts from; averaged back after every round."""

    name = ""

    def __init__(self, engine: BatchEngine, models: Stack, groups: list[list[int]]) -> None:
        self.engine = engine
        self.models = models
        self.groups = groups

    def assignment(self, exp: ExperimentData) -> list[int]:
        """Model index each node trains from this round (and is scored with)."""
        owner = [0] * len(exp)
        for g, members in enumerate(self.groups):
            for i in members:
                owner[i] = g
        return owner

    def update(self, trained: Stack, owner: list[int], exp: ExperimentData) -> None:
        """Average the trained copies per model (a model nobody trained stays)."""
        groups: dict[int, list[int]] = {}
        for i, g in enumerate(owner):
            groups.setdefault(g, []).append(i)
        taken = sorted(groups)
        averaged = BatchEngine.average(
            trained, [groups[g] for g in taken], [len(d.train) for d in exp.data]
        )
        models = [t.clone() for t in self.models]
        for k, t in enumerate(averaged):
            models[k][torch.as_tensor(taken)] = t
        self.models = tuple(models)

    def drifted(self, exp: ExperimentData) -> None:
        """Some nodes' data changed (``exp`` holds the new data)."""

    @property
    def group_count(self) -> int:
        return len(self.groups)


class _Fixed(_Baseline):
    """``global`` and ``alone``: groups that never change."""

    def __init__(self, name: str, engine: BatchEngine, groups: list[list[int]]) -> None:
        super().__init__(engine, engine.init(len(groups), salt=BASELINES.index(name)), groups)
        self.name = name


class _Oracle(_Baseline):
    name = "oracle"

    def __init__(self, engine: BatchEngine, exp: ExperimentData, capacity: int) -> None:
        groups = oracle_groups(exp.concepts, capacity)
        super().__init__(engine, engine.init(len(groups), salt=BASELINES.index("oracle")), groups)
        self.capacity = capacity

    def drifted(self, exp: ExperimentData) -> None:
        new = oracle_groups(exp.concepts, self.capacity)
        parents = [
            max(range(len(self.groups)), key=lambda g, m=set(members): len(m & set(self.groups[g])))
            for members in new
        ]
        self.models = BatchEngine.take(self.models, parents)
        self.groups = new


class _Ifca(_Baseline):
    name = "ifca"

    def __init__(self, engine: BatchEngine, k: int) -> None:
        if k < 1:
            raise ValueError(f"ifca needs k >= 1, got {k}")
        super().__init__(engine, engine.init(k, salt=BASELINES.index("ifca")), [])
        self.k = k

    def assignment(self, exp: ExperimentData) -> list[int]:
        # Each node takes the model with the lowest loss on its own training data.
        nodes = list(range(len(exp)))
        _, loss = self.engine.matrix(self.models, nodes, "train")
        owner = [int(j) for j in loss.argmin(axis=1)]
        self.groups = [[i for i in nodes if owner[i] == g] for g in range(self.k)]
        self.groups = [g for g in self.groups if g]
        return owner

    @property
    def group_count(self) -> int:
        return len(self.groups)


# --- running them ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineDrift:
    """Nodes whose data switch at the start of round ``at_round`` (1-based) to ``data``."""

    at_round: int
    data: Mapping[int, NodeData]


def run_baselines(
    exp: ExperimentData,
    capacity: int = 5,
    rounds: int = 40,
    epochs: int = 2,
    seed: int = 0,
    on_done: Callable[[BaselineResult], None] | None = None,
    *,
    names: Sequence[str] = BASELINES,
    ifca_k: int | None = None,
    drift: BaselineDrift | None = None,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, BaselineResult]:
    """Train the baselines together on ``exp`` for ``rounds`` rounds and score them.

    Parameters
    ----------
    exp
        The nodes (their data before any drift).
    capacity
        Group capacity of the oracle's groups (default: 5).
    rounds, epochs
        The budget: rounds of ``epochs`` local epochs (defaults: 40, 2).
    seed
        Seed of initial weights and shuffles (default: 0).
    on_done
        Called with each result once all are done.
    names
        Which baselines (default: all of :data:`BASELINES`); ``oracle`` is left out when a
        concept is unknown, ``ifca`` when ``k`` is neither given nor known.
    ifca_k
        IFCA's number of models (default: the number of distinct concepts after any drift).
    drift
        Data some nodes switch to during the run (default: none).
    on_round
        Called with the round number after every round (progress).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    unknown = set(names) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; expected {BASELINES}")
    final = exp.switched(drift.data) if drift is not None else exp
    started = time.perf_counter()
    engine = BatchEngine(exp.spec, exp.data, epochs=epochs, seed=seed)
    n = len(exp)
    runs: list[_Baseline] = []
    if "global" in names:
        runs.append(_Fixed("global", engine, [list(range(n))]))
    if "alone" in names:
        runs.append(_Fixed("alone", engine, [[i] for i in range(n)]))
    if "oracle" in names and exp.concept_count is not None and final.concept_count is not None:
        runs.append(_Oracle(engine, exp, capacity))
    k = ifca_k if ifca_k is not None else final.concept_count
    if "ifca" in names and k is not None:
        runs.append(_Ifca(engine, k))
    history: dict[str, list[float]] = {b.name: [] for b in runs}
    current = exp
    nodes = list(range(n)) * len(runs)
    every = math.ceil(rounds / HISTORY_POINTS)
    for rnd in range(1, rounds + 1):
        if drift is not None and rnd == drift.at_round:
            for i, data in drift.data.items():
                engine.set_data(i, data)
            current = final
            for b in runs:
                b.drifted(current)
        owners = [b.assignment(current) for b in runs]
        start = _concat([BatchEngine.take(b.models, o) for b, o in zip(runs, owners, strict=True)])
        trained = engine.train(start, nodes)
        for j, (b, owner) in enumerate(zip(runs, owners, strict=True)):
            b.update(_slice(trained, j * n, (j + 1) * n), owner, current)
        if rnd % every == 0 or rnd == rounds:
            for b, acc in zip(runs, _score(engine, runs, current), strict=True):
                history[b.name].append(float(acc.mean()))
        if on_round is not None:
            on_round(rnd)
    if drift is not None and drift.at_round > rounds:  # the run drifted after its last round
        for i, data in drift.data.items():
            engine.set_data(i, data)
        for b in runs:
            b.drifted(final)
    accs = _score(engine, runs, final)
    share = (time.perf_counter() - started) / max(len(runs), 1)
    results: dict[str, BaselineResult] = {}
    for b, acc in zip(runs, accs, strict=True):
        values = [float(a) for a in acc]
        results[b.name] = BaselineResult(
            b.name, values, float(np.mean(values)), share, history[b.name], b.group_count, every
        )
    for name in names:
        if name in results and on_done is not None:
            on_done(results[name])
    return results


def _score(engine: BatchEngine, runs: Sequence[_Baseline], exp: ExperimentData) -> list[np.ndarray]:
    """Every baseline's accuracy per node on the nodes' test splits (one vectorised pass)."""
    n = len(exp)
    owners = [b.assignment(exp) for b in runs]
    stack = _concat([BatchEngine.take(b.models, o) for b, o in zip(runs, owners, strict=True)])
    acc = engine.accuracy(stack, list(range(n)) * len(runs), "test")
    return [acc[j * n : (j + 1) * n] for j in range(len(runs))]


def _concat(stacks: Sequence[Stack]) -> Stack:
    return tuple(torch.cat(parts) for parts in zip(*stacks, strict=True))


def _slice(stack: Stack, lo: int, hi: int) -> Stack:
    return tuple(t[lo:hi] for t in stack)


def global_fedavg(
    exp: ExperimentData, rounds: int = 40, epochs: int = 2, seed: int = 0
) -> BaselineResult:
    """One FedAvg model over all nodes."""
    return run_baselines(exp, rounds=rounds, epochs=epochs, seed=seed, names=["global"])["global"]


def alone(exp: ExperimentData, rounds: int = 40, epochs: int = 2, seed: int = 0) -> BaselineResult:
    """Every node trains alone for ``rounds * epochs`` epochs."""
    return run_baselines(exp, rounds=rounds, epochs=epochs, seed=seed, names=["alone"])["alone"]


def oracle(
    exp: ExperimentData, capacity: int = 5, rounds: int = 40, epochs: int = 2, seed: int = 0
) -> BaselineResult:
    """FedAvg within the true concept groups, split to respect ``capacity``."""
    oracle_groups(exp.concepts, capacity)  # a clear error when a concept is unknown
    return run_baselines(exp, capacity, rounds, epochs, seed, names=["oracle"])["oracle"]


def ifca(
    exp: ExperimentData, k: int | None = None, rounds: int = 40, epochs: int = 2, seed: int = 0
) -> BaselineResult:
    """IFCA with ``k`` models (default: the number of distinct concepts)."""
    if k is None and exp.concept_count is None:
        raise ValueError("ifca needs k: the nodes' concepts are unknown")
    return run_baselines(exp, rounds=rounds, epochs=epochs, seed=seed, names=["ifca"], ifca_k=k)[
        "ifca"
    ]
