"""Node data: parse a data spec and hand one node its reproducible share.

Specs (one string, as given to ``mycelium join --data``):

``synthetic`` / ``synthetic:C``
    A learnable synthetic classification task with 20 features and C classes (default 3).
``digits`` / ``digits:iid``
    scikit-learn's bundled 8x8 digits (1,797 real images), dealt IID.
``digits:label-shift:K``
    K concepts; concept ``k = node_index % K`` relabels the digits with a fixed permutation
    of the 10 labels derived from the seed (concept 0 is the identity).
``digits:rotation:K``
    K concepts; concept k rotates the images by ``k * 360 / K`` degrees (exact for multiples
    of 90 degrees, interpolated otherwise).
``digits:label-shift:K:C`` / ``digits:rotation:K:C``
    The same shard of the same pool under concept ``C`` instead of ``node_index % K`` (a node
    whose data drifts to another concept).
``digits:dirichlet:ALPHA``
    Label skew without discrete concepts: the samples of each class are dealt to the nodes in
    proportions drawn from a symmetric Dirichlet(ALPHA) (small ALPHA: few classes per node); a
    node's test split is drawn, with replacement, from the common test set in its own label
    proportions. ``concept`` is None.
``npz:PATH``
    The node's own arrays ``x`` (N, ...) and ``y`` (N,) of integer labels, optionally an
    integer ``concept`` (used only for scoring) and an integer ``classes``.

Partitioning (shared by ``synthetic`` and ``digits``; ``docs/learning.md``):
20% of the pool is held out as the common test set (a node's test split is its concept's
transform of it); the rest is shuffled with the seed and dealt into ``num_nodes`` disjoint
shards; each shard is split 80/20 into train and validation. The result depends only on
``(spec, node_index, num_nodes, seed)``. A ``npz`` file is one node's whole data: 20% test,
then 80/20 train/validation, shuffled with the seed.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
SYNTHETIC_FEATURES = 20
MAX_NPZ_BYTES = 2 * 1024**3
DIGITS_CLASSES = 10


class DataSpecError(ValueError):
    """A data spec or a data file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (float32, shape ``(n, *input_shape)``) and labels ``y`` (int64, ``(n,)``)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class NodeData:
    """One node's data: train, validation and test splits plus what a model needs to know."""

    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    classes: int
    concept: int | None
    description: str
    spec: str = ""

    def describe(self) -> dict[str, Any]:
        """Summary for the registry's ``data`` field (JSON-friendly; no data leaves the node)."""
        return describe(self)


def describe(data: NodeData) -> dict[str, Any]:
    """Return a JSON-friendly summary of ``data``: spec, concept, shape, classes and counts."""
    return {
        "spec": data.spec,
        "description": data.description,
        "concept": data.concept,
        "input_shape": list(data.input_shape),
        "classes": data.classes,
        "train": len(data.train),
        "val": len(data.val),
        "test": len(data.test),
    }


def load_node_data(spec: str, node_index: int, num_nodes: int, seed: int = 0) -> NodeData:
    """Load node ``node_index`` of ``num_nodes``'s share of the data described by ``spec``.

    Parameters
    ----------
    spec : str
        See the module docstring.
    node_index : int
        This node's index, ``0 <= node_index < num_nodes``.
    num_nodes : int
        How many nodes share the pool.
    seed : int
        Seed of every random choice (default: 0).

    Raises
    ------
    DataSpecError
        For an unknown spec, bad numbers, or an unusable ``npz`` file.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataSpecError("empty data spec; expected one of " + _SPEC_HELP)
    if not isinstance(num_nodes, int) or num_nodes < 1:
        raise DataSpecError(f"num_nodes must be a positive integer, got {num_nodes!r}")
    if not isinstance(node_index, int) or not 0 <= node_index < num_nodes:
        raise DataSpecError(f"node_index must be in [0, {num_nodes}), got {node_index!r}")
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if kind == "npz":
        if not rest:
            raise DataSpecError("npz spec needs a path: npz:PATH")
        return _load_npz(Path(rest), spec, seed)
    if kind == "synthetic":
        classes = _parse_int(rest, "synthetic classes", low=2, high=10) if rest else 3
        return _load_synthetic(spec, classes, node_index, num_nodes, seed)
    if kind == "digits":
        return _load_digits(spec, rest, node_index, num_nodes, seed)
    raise DataSpecError(f"unknown data spec {spec!r}; expected one of {_SPEC_HELP}")


_SPEC_HELP = (
    "'synthetic', 'synthetic:C', 'digits', 'digits:iid', 'digits:label-shift:K', "
    "'digits:rotation:K', 'digits:label-shift:K:C', 'digits:rotation:K:C', "
    "'digits:dirichlet:ALPHA', 'npz:PATH'"
)


def _parse_int(text: str, what: str, *, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataSpecError(f"{what} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise DataSpecError(f"{what} must be in [{low}, {high}], got {value}")
    return value


# --- pools and partitioning -------------------------------------------------------------------


def _partition(
    n: int, node_index: int, num_nodes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) of one node in a pool of ``n`` samples."""
    rng = np.random.default_rng([seed, 0x5EED])
    order = rng.permutation(n)
    n_test = round(n * TEST_FRACTION)
    test, rest = order[:n_test], order[n_test:]
    if len(rest) < 2 * num_nodes:
        raise DataSpecError(
            f"{num_nodes} nodes are too many for {len(rest)} training samples "
            "(each node needs at least 2)"
        )
    shard = np.array_split(rest, num_nodes)[node_index]
    n_val = max(1, round(len(shard) * VAL_FRACTION))
    return shard[n_val:], shard[:n_val], test


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    return Split(np.ascontiguousarray(x[idx], dtype=np.float32), y[idx].astype(np.int64))


def _load_synthetic(
    spec: str, classes: int, node_index: int, num_nodes: int, seed: int
) -> NodeData:
    from sklearn.datasets import make_classification

    # The pool grows with the network so every node gets a useful shard.
    n = max(2000, 120 * num_nodes)
    x, y = make_classification(
        n_samples=n,
        n_features=SYNTHETIC_FEATURES,
        n_informative=10,
        n_redundant=4,
        n_classes=classes,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=seed,
    )
    lo, hi = x.min(axis=0), x.max(axis=0)
    x = ((x - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
    tr, va, te = _partition(n, node_index, num_nodes, seed)
    return NodeData(
        train=_split(x, y, tr),
        val=_split(x, y, va),
        test=_split(x, y, te),
        input_shape=(SYNTHETIC_FEATURES,),
        classes=classes,
        concept=None,
        description=f"synthetic {SYNTHETIC_FEATURES} features, {classes} classes, "
        f"shard {node_index}/{num_nodes}",
        spec=spec,
    )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    return x, bunch.target.astype(np.int64)


def label_permutation(concept: int, seed: int, classes: int = DIGITS_CLASSES) -> np.ndarray:
    """The label permutation of a label-shift concept (concept 0 is the identity)."""
    if concept == 0:
        return np.arange(classes)
    return np.random.default_rng([seed, 0xC0C0, concept]).permutation(classes)


def _rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    if degrees % 90 == 0:
        return np.ascontiguousarray(np.rot90(x, k=int(degrees // 90), axes=(-2, -1)))
    from scipy.ndimage import rotate

    out = rotate(x, degrees, axes=(-1, -2), reshape=False, order=1, mode="constant")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _load_digits(spec: str, rest: str, node_index: int, num_nodes: int, seed: int) -> NodeData:
    parts = rest.split(":") if rest else ["iid"]
    mode = parts[0]
    concept: int | None = None
    if mode == "iid":
        if len(parts) != 1:
            raise DataSpecError(f"'digits:iid' takes no argument, got {spec!r}")
        k = 1
    elif mode == "dirichlet":
        if len(parts) != 2:
            raise DataSpecError(f"expected 'digits:dirichlet:ALPHA', got {spec!r}")
        return _load_dirichlet(spec, _parse_alpha(parts[1]), node_index, num_nodes, seed)
    elif mode in ("label-shift", "rotation"):
        if len(parts) not in (2, 3):
            raise DataSpecError(
                f"expected 'digits:{mode}:K' (K concepts) or 'digits:{mode}:K:C' (concept C), "
                f"got {spec!r}"
            )
        k = _parse_int(
            parts[1], "number of concepts K", low=1, high=360 if mode == "rotation" else 64
        )
        if len(parts) == 3:
            concept = _parse_int(parts[2], "concept C", low=0, high=k - 1)
    else:
        raise DataSpecError(
            f"unknown digits partition {mode!r} in {spec!r}; expected iid, label-shift:K, "
            "rotation:K or dirichlet:ALPHA"
        )
    x, y = _digits()
    tr, va, te = _partition(len(y), node_index, num_nodes, seed)
    concept = node_index % k if concept is None else concept
    description = f"digits {mode}"
    if mode == "label-shift":
        perm = label_permutation(concept, seed)
        y = perm[y]
        description += f" concept {concept}/{k} (labels {''.join(map(str, perm))})"
    elif mode == "rotation":
        degrees = concept * 360.0 / k
        x = _rotate(x, degrees)
        description += f" concept {concept}/{k} ({degrees:g} degrees)"
    return NodeData(
        train=_split(x, y, tr),
        val=_split(x, y, va),
        test=_split(x, y, te),
        input_shape=(1, 8, 8),
        classes=DIGITS_CLASSES,
        concept=concept,
        description=f"{description}, shard {node_index}/{num_nodes}",
        spec=spec,
    )


MIN_DIRICHLET_SHARD = 10  # samples a node needs at least (a shard is re-dealt until all have it)


def _parse_alpha(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        raise DataSpecError(f"Dirichlet ALPHA must be a number, got {text!r}") from None
    if not 0.01 <= alpha <= 1000:
        raise DataSpecError(f"Dirichlet ALPHA must be in [0.01, 1000], got {alpha}")
    return alpha


def dirichlet_shards(
    labels: np.ndarray, num_nodes: int, alpha: float, seed: int, classes: int = DIGITS_CLASSES
) -> list[np.ndarray]:
    """Deal sample indices to ``num_nodes`` nodes, each class in Dirichlet(alpha) proportions.

    The deal is drawn again (up to 100 times, then the last one is refused) until every node
    holds at least ``MIN_DIRICHLET_SHARD`` samples; the result depends only on the arguments.
    """
    if len(labels) < MIN_DIRICHLET_SHARD * num_nodes:
        raise DataSpecError(
            f"{num_nodes} nodes are too many for {len(labels)} samples dealt by label skew "
            f"(each node needs at least {MIN_DIRICHLET_SHARD})"
        )
    rng = np.random.default_rng([seed, 0xD1D1])
    for _ in range(100):
        shards: list[list[int]] = [[] for _ in range(num_nodes)]
        for c in range(classes):
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_nodes, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for node, part in enumerate(np.split(members, cuts)):
                shards[node].extend(int(i) for i in part)
        if min(len(s) for s in shards) >= MIN_DIRICHLET_SHARD:
            return [rng.permutation(np.array(s, dtype=np.int64)) for s in shards]
    raise DataSpecError(
        f"no Dirichlet({alpha}) deal gives each of {num_nodes} nodes {MIN_DIRICHLET_SHARD} "
        "samples; use a larger ALPHA or fewer nodes"
    )


def _load_dirichlet(
    spec: str, alpha: float, node_index: int, num_nodes: int, seed: int
) -> NodeData:
    x, y = _digits()
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(y))
    n_test = round(len(y) * TEST_FRACTION)
    test, rest = order[:n_test], order[n_test:]
    shard = rest[dirichlet_shards(y[rest], num_nodes, alpha, seed)[node_index]]
    n_val = max(1, round(len(shard) * VAL_FRACTION))
    # The node's test split follows its own label proportions (drawn from the common test set).
    counts = np.bincount(y[shard], minlength=DIGITS_CLASSES).astype(float)
    weights = (counts / counts.sum())[y[test]]
    rng = np.random.default_rng([seed, 0x7E57, node_index])
    own_test = rng.choice(test, size=len(test), replace=True, p=weights / weights.sum())
    top = ", ".join(f"{c}:{int(n)}" for c, n in enumerate(counts) if n)
    return NodeData(
        train=_split(x, y, shard[n_val:]),
        val=_split(x, y, shard[:n_val]),
        test=_split(x, y, own_test),
        input_shape=(1, 8, 8),
        classes=DIGITS_CLASSES,
        concept=None,
        description=f"digits dirichlet {alpha:g} (labels {top}), shard {node_index}/{num_nodes}",
        spec=spec,
    )


# --- user arrays ----------------------------------------------------------------------------


def _load_npz(path: Path, spec: str, seed: int) -> NodeData:
    if not path.is_file():
        raise DataSpecError(f"npz file not found: {path}")
    if path.stat().st_size > MAX_NPZ_BYTES:
        raise DataSpecError(f"npz file {path} is larger than {MAX_NPZ_BYTES} bytes")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise DataSpecError(
                    f"npz file {path} lacks array(s) {sorted(missing)}; it has {archive.files}"
                )
            x, y = archive["x"], archive["y"]
            concept = _scalar_int(archive, "concept", path)
            classes_given = _scalar_int(archive, "classes", path)
    except DataSpecError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        # ValueError also covers object arrays, which would need pickle.
        raise DataSpecError(f"cannot read npz file {path}: {exc}") from None
    x, y, classes = _validate_arrays(x, y, classes_given, path)
    rng = np.random.default_rng([seed, 0xF11E])
    order = rng.permutation(len(y))
    n_test = max(1, round(len(y) * TEST_FRACTION))
    test, rest = order[:n_test], order[n_test:]
    n_val = max(1, round(len(rest) * VAL_FRACTION))
    return NodeData(
        train=_split(x, y, rest[n_val:]),
        val=_split(x, y, rest[:n_val]),
        test=_split(x, y, test),
        input_shape=tuple(int(d) for d in x.shape[1:]),
        classes=classes,
        concept=concept,
        description=f"npz {path.name}: {len(y)} samples",
        spec=spec,
    )


def _scalar_int(archive: Any, name: str, path: Path) -> int | None:
    if name not in archive.files:
        return None
    value = archive[name]
    if value.shape != () or not np.issubdtype(value.dtype, np.integer):
        raise DataSpecError(f"npz file {path}: '{name}' must be a scalar integer")
    return int(value)


def _validate_arrays(
    x: np.ndarray, y: np.ndarray, classes: int | None, path: Path
) -> tuple[np.ndarray, np.ndarray, int]:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataSpecError(f"npz file {path}: x must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataSpecError(f"npz file {path}: x must have shape (N, features...), got {x.shape}")
    if y.ndim != 1:
        raise DataSpecError(f"npz file {path}: y must have shape (N,), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataSpecError(f"npz file {path}: y must hold integer labels, got dtype {y.dtype}")
    if len(x) != len(y):
        raise DataSpecError(f"npz file {path}: x has {len(x)} rows but y has {len(y)}")
    if len(y) < 5:
        raise DataSpecError(f"npz file {path}: needs at least 5 samples, got {len(y)}")
    if y.min() < 0:
        raise DataSpecError(f"npz file {path}: labels must be >= 0, got {int(y.min())}")
    top = int(y.max()) + 1
    if classes is None:
        classes = max(top, 2)
    elif classes < top:
        raise DataSpecError(f"npz file {path}: classes={classes} but labels reach {top - 1}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataSpecError(f"npz file {path}: x contains NaN or infinite values")
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) images get a channel axis for the CNN
    return x, y.astype(np.int64), classes
