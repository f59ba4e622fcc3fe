"""The nodes of an experiment: built-in scenarios of the bundled digits, or a folder of shards,
and the data some nodes switch to when their world drifts.

Scenarios (``--scenario``):

``iid``
    One concept, digits dealt evenly.
``label-shift``
    K concepts, each a permutation of the labels (node ``i`` holds concept ``i mod K``).
``rotation``
    K concepts, each a rotation of the images by a multiple of ``360 / K`` degrees.
``dirichlet``
    Label skew with no discrete concepts: each class dealt in Dirichlet(``alpha``) proportions.
``drift``
    ``label-shift``, and a third of the nodes (chosen by the seed) switch to the next concept
    during the run (:func:`drift_data`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from mycelium_p2p.learning.data import DataSpecError, NodeData, load_node_data
from mycelium_p2p.learning.models import model_spec

SCENARIOS = ("iid", "label-shift", "rotation", "dirichlet", "drift")
DEFAULT_ALPHA = 0.5


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

    @property
    def concept_count(self) -> int | None:
        """How many distinct concepts the nodes hold (None when any is unknown)."""
        concepts = self.concepts
        return None if any(c is None for c in concepts) else len(set(concepts))

    def subset(self, indices: list[int]) -> ExperimentData:
        """Only the nodes at ``indices``, in that order."""
        return ExperimentData(
            tuple(self.names[i] for i in indices),
            tuple(self.shards[i] for i in indices),
            tuple(self.data[i] for i in indices),
        )

    def switched(self, drift: Mapping[int, NodeData]) -> ExperimentData:
        """The same nodes, those in ``drift`` holding their new data."""
        data = tuple(drift.get(i, d) for i, d in enumerate(self.data))
        return replace(self, data=data)

    def __len__(self) -> int:
        return len(self.data)


def scenario_spec(scenario: str, concepts: int, alpha: float = DEFAULT_ALPHA) -> str:
    """Data spec of a scenario (``drift`` deals as ``label-shift``)."""
    if scenario == "iid":
        return "digits:iid"
    if scenario == "dirichlet":
        return f"digits:dirichlet:{alpha:g}"
    if scenario in ("label-shift", "rotation", "drift"):
        if concepts < 1:
            raise ValueError(f"concepts must be >= 1, got {concepts}")
        kind = "label-shift" if scenario == "drift" else scenario
        return f"digits:{kind}:{concepts}"
    raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")


def load_scenario(
    scenario: str, nodes: int, concepts: int, seed: int = 0, *, alpha: float = DEFAULT_ALPHA
) -> ExperimentData:
    """Deal the bundled digits to ``nodes`` nodes under a scenario (see the module docstring)."""
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    spec = scenario_spec(scenario, concepts, alpha)
    data = tuple(load_node_data(spec, i, nodes, seed) for i in range(nodes))
    names = tuple(f"n{i:02d}" for i in range(nodes))
    return ExperimentData(names, tuple(spec for _ in range(nodes)), data)


def load_shards(directory: str | Path, seed: int = 0) -> ExperimentData:
    """Load one node per ``.npz`` file of ``directory`` (sorted by name)."""
    files = _npz_files(directory)
    data = tuple(load_node_data(f"npz:{p}", 0, 1, seed) for p in files)
    return ExperimentData(tuple(p.stem for p in files), tuple(p.name for p in files), data)


def _npz_files(directory: str | Path) -> list[Path]:
    root = Path(directory)
    if not root.is_dir():
        raise DataSpecError(f"shards directory not found: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix == ".npz" and p.is_file())
    if not files:
        raise DataSpecError(f"no .npz files in {root}")
    return files


def drift_data(exp: ExperimentData, concepts: int, seed: int = 0) -> dict[int, NodeData]:
    """The ``drift`` scenario's switch: a third of the nodes (at least one, chosen by the seed)
    move to the next concept (``c + 1 mod K``), keeping their shard of the pool."""
    if concepts < 2:
        raise ValueError(f"drift needs at least 2 concepts, got {concepts}")
    n = len(exp)
    chosen = sorted(random.Random(seed).sample(range(n), max(1, n // 3)))
    out: dict[int, NodeData] = {}
    for i in chosen:
        new = (int(exp.data[i].concept or 0) + 1) % concepts
        out[i] = load_node_data(f"digits:label-shift:{concepts}:{new}", i, n, seed)
    return out


def load_drift_shards(
    exp: ExperimentData, directory: str | Path, seed: int = 0
) -> dict[int, NodeData]:
    """New data for every node whose shard file name also exists in ``directory``."""
    by_name = {p.name: p for p in _npz_files(directory)}
    out = {
        i: load_node_data(f"npz:{by_name[shard]}", 0, 1, seed)
        for i, shard in enumerate(exp.shards)
        if shard in by_name
    }
    if not out:
        raise DataSpecError(
            f"no shard of the experiment ({', '.join(exp.shards[:3])}, ...) is in {directory}"
        )
    first = exp.data[0]
    for i, d in out.items():
        if (d.input_shape, d.classes) != (first.input_shape, first.classes):
            raise DataSpecError(
                f"drift shard {exp.shards[i]}: input shape {d.input_shape} x {d.classes} classes "
                f"differs from the experiment's {first.input_shape} x {first.classes}"
            )
    return out
