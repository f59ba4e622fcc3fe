"""The experiment's data and its three baselines, on the same shards and training budget.

A run of ``R`` rounds with ``E`` local epochs per round gives every baseline the same budget:

``global``
    One FedAvg model over all nodes (what a single federation would learn).
``alone``
    Every node trains its own model for ``R * E`` epochs, in ``R`` chunks of ``E``.
``oracle``
    FedAvg within the true concept groups, each split into balanced chunks of at most
    ``capacity`` nodes (the fair reference when groups are capped).

Each returns every node's accuracy on its own test split, their mean, a per-round history of the
mean, and its wall time. The small training engine here (FedAvg of numpy weights, one scratch
model reused for every node) is shared with :mod:`mycelium_p2p.experiment.simulate`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mycelium_p2p.learning.data import DataSpecError, NodeData, Split, load_node_data
from mycelium_p2p.learning.models import build_model, get_weights, model_spec, set_weights
from mycelium_p2p.learning.train import evaluate, train

SCENARIOS = ("iid", "label-shift", "rotation")
BASELINES = ("global", "alone", "oracle")

Weights = list[np.ndarray]


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentData:
    """The nodes of one experiment: names, shard labels and their data."""

    names: tuple[str, ...]
    shards: tuple[str, ...]
    data: tuple[NodeData, ...]

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("an experiment needs at least one node")
        if not len(self.names) == len(self.shards) == len(self.data):
            raise ValueError("names, shards and data must have the same length")
        first = self.data[0]
        for name, d in zip(self.names, self.data, strict=True):
            if (d.input_shape, d.classes) != (first.input_shape, first.classes):
                raise ValueError(
                    f"node {name}: input shape {d.input_shape} x {d.classes} classes differs from "
                    f"{first.input_shape} x {first.classes}; all shards must share one model"
                )

    @property
    def spec(self) -> str:
        """The model spec every node uses (an MLP over the shared input shape)."""
        return model_spec("mlp", self.data[0].input_shape, self.data[0].classes)

    @property
    def concepts(self) -> list[int | None]:
        """Each node's true concept (``None`` where unknown)."""
        return [d.concept for d in self.data]

    def __len__(self) -> int:
        return len(self.data)


def scenario_spec(scenario: str, concepts: int) -> str:
    """Data spec of a scenario: ``digits:iid``, ``digits:label-shift:K``, ``digits:rotation:K``."""
    if scenario == "iid":
        return "digits:iid"
    if scenario in ("label-shift", "rotation"):
        if concepts < 1:
            raise ValueError(f"concepts must be >= 1, got {concepts}")
        return f"digits:{scenario}:{concepts}"
    raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")


def load_scenario(scenario: str, nodes: int, concepts: int, seed: int = 0) -> ExperimentData:
    """Deal the bundled digits to ``nodes`` nodes under a scenario (see :func:`scenario_spec`)."""
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    spec = scenario_spec(scenario, concepts)
    data = tuple(load_node_data(spec, i, nodes, seed) for i in range(nodes))
    names = tuple(f"n{i:02d}" for i in range(nodes))
    return ExperimentData(names, tuple(spec for _ in range(nodes)), data)


def load_shards(directory: str | Path, seed: int = 0) -> ExperimentData:
    """Load one node per ``.npz`` file of ``directory`` (sorted by name)."""
    root = Path(directory)
    if not root.is_dir():
        raise DataSpecError(f"shards directory not found: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix == ".npz" and p.is_file())
    if not files:
        raise DataSpecError(f"no .npz files in {root}")
    data = tuple(load_node_data(f"npz:{p}", 0, 1, seed) for p in files)
    return ExperimentData(tuple(p.stem for p in files), tuple(p.name for p in files), data)


# --- training engine (shared with the simulation) ---------------------------------------------


def fedavg(updates: Sequence[Weights], examples: Sequence[int]) -> Weights:
    """Average weight lists, weighted by training examples (FedAvg)."""
    if not updates or len(updates) != len(examples):
        raise ValueError("fedavg needs one example count per update, and at least one update")
    total = float(sum(examples))
    if total <= 0:
        return [np.mean(arrs, axis=0) for arrs in zip(*updates, strict=True)]
    coef = [n / total for n in examples]
    return [
        sum(c * a for c, a in zip(coef, arrs, strict=True)).astype(arrs[0].dtype)
        for arrs in zip(*updates, strict=True)
    ]


class Engine:
    """Trains and evaluates weight lists on node splits with one reused scratch model.

    Parameters
    ----------
    spec
        Model spec of every node.
    epochs
        Local epochs per round (default: 2).
    rng
        Source of training seeds (default: ``random.Random(0)``).
    """

    def __init__(self, spec: str, epochs: int = 2, rng: random.Random | None = None) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        torch.set_num_threads(1)  # tiny models: threads only add contention on 2 shared cores
        self.spec = spec
        self.epochs = epochs
        self.rng = rng or random.Random(0)
        self._model = build_model(spec)

    def init(self) -> Weights:
        """Fresh initial weights, seeded from the engine's rng."""
        return get_weights(build_model(self.spec, seed=self.rng.randrange(2**31)))

    def train(self, weights: Weights, split: Split) -> Weights:
        """Weights after ``epochs`` local epochs on ``split``, starting from ``weights``."""
        set_weights(self._model, weights)
        train(self._model, split, epochs=self.epochs, seed=self.rng.randrange(2**31))
        return get_weights(self._model)

    def accuracy(self, weights: Weights, split: Split) -> float:
        """Accuracy of ``weights`` on ``split``."""
        set_weights(self._model, weights)
        return evaluate(self._model, split).accuracy

    def fedavg_round(self, weights: Weights, members: Sequence[NodeData]) -> Weights:
        """One FedAvg round of ``members`` starting from the group model ``weights``."""
        updates = [self.train(weights, d.train) for d in members]
        return fedavg(updates, [len(d.train) for d in members])


# --- baselines --------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    """Per-node test accuracy of a baseline, its mean, per-round history and wall time."""

    name: str
    accuracies: list[float]
    mean: float
    seconds: float
    history: list[float] = field(default_factory=list)
    groups: int = 0

    def to_json(self) -> dict:
        """JSON-friendly summary."""
        return {
            "mean_accuracy": round(self.mean, 4),
            "accuracies": [round(a, 4) for a in self.accuracies],
            "groups": self.groups,
            "seconds": round(self.seconds, 3),
            "history": [round(a, 4) for a in self.history],
        }


def _fixed_groups(
    name: str,
    exp: ExperimentData,
    groups: list[list[int]],
    rounds: int,
    epochs: int,
    seed: int,
) -> BaselineResult:
    """FedAvg within fixed groups for ``rounds`` rounds (a group of one trains alone)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    start = time.perf_counter()
    engine = Engine(exp.spec, epochs, random.Random(seed))
    models = [engine.init() for _ in groups]
    history: list[float] = []
    accs = [0.0] * len(exp)
    for _ in range(rounds):
        for gi, members in enumerate(groups):
            models[gi] = engine.fedavg_round(models[gi], [exp.data[i] for i in members])
        for gi, members in enumerate(groups):
            for i in members:
                accs[i] = engine.accuracy(models[gi], exp.data[i].test)
        history.append(float(np.mean(accs)))
    return BaselineResult(
        name, accs, float(np.mean(accs)), time.perf_counter() - start, history, len(groups)
    )


def global_fedavg(
    exp: ExperimentData, rounds: int = 40, epochs: int = 2, seed: int = 0
) -> BaselineResult:
    """One FedAvg model over all nodes."""
    return _fixed_groups("global", exp, [list(range(len(exp)))], rounds, epochs, seed)


def alone(exp: ExperimentData, rounds: int = 40, epochs: int = 2, seed: int = 0) -> BaselineResult:
    """Every node trains alone for ``rounds * epochs`` epochs."""
    return _fixed_groups("alone", exp, [[i] for i in range(len(exp))], rounds, epochs, seed)


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


def oracle(
    exp: ExperimentData, capacity: int = 5, rounds: int = 40, epochs: int = 2, seed: int = 0
) -> BaselineResult:
    """FedAvg within the true concept groups, split to respect ``capacity``."""
    groups = oracle_groups(exp.concepts, capacity)
    return _fixed_groups("oracle", exp, groups, rounds, epochs, seed)


def run_baselines(
    exp: ExperimentData,
    capacity: int = 5,
    rounds: int = 40,
    epochs: int = 2,
    seed: int = 0,
    on_done: Callable[[BaselineResult], None] | None = None,
) -> dict[str, BaselineResult]:
    """Run global, alone and (when concepts are known) oracle; ``on_done`` sees each result."""
    results: dict[str, BaselineResult] = {}
    runs: list[tuple[str, Callable[[], BaselineResult]]] = [
        ("global", lambda: global_fedavg(exp, rounds, epochs, seed)),
        ("alone", lambda: alone(exp, rounds, epochs, seed)),
    ]
    if all(c is not None for c in exp.concepts):
        runs.append(("oracle", lambda: oracle(exp, capacity, rounds, epochs, seed)))
    for name, run in runs:
        results[name] = run()
        if on_done is not None:
            on_done(results[name])
    return results
