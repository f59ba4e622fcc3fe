"""Data specs: partitioning, concepts, reproducibility and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mycelium_p2p.learning.data import (
    DataSpecError,
    NodeData,
    describe,
    label_permutation,
    load_node_data,
)


def _rows(*arrays: np.ndarray) -> list[bytes]:
    return [row.tobytes() for arr in arrays for row in arr.reshape(len(arr), -1)]


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic",
        "synthetic:4",
        "digits",
        "digits:iid",
        "digits:label-shift:4",
        "digits:rotation:4",
        "digits:rotation:6",
    ],
)
def test_specs_give_well_formed_splits(spec: str) -> None:
    data = load_node_data(spec, 1, 5, seed=3)
    assert isinstance(data, NodeData)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.shape[1:] == data.input_shape
        assert len(split.x) == len(split.y) > 0
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        assert split.y.min() >= 0 and split.y.max() < data.classes
    assert len(data.val) < len(data.train)
    summary = data.describe()
    assert summary == describe(data)
    assert summary["spec"] == spec and summary["train"] == len(data.train)


def test_digits_shape_and_counts() -> None:
    nodes = [load_node_data("digits", i, 4, seed=0) for i in range(4)]
    assert nodes[0].input_shape == (1, 8, 8) and nodes[0].classes == 10
    held = len(nodes[0].test)
    assert held == round(1797 * 0.2)
    assert sum(len(n.train) + len(n.val) for n in nodes) + held == 1797
    # every node is tested on the same held-out set (same concept here)
    assert all(np.array_equal(n.test.x, nodes[0].test.x) for n in nodes)


def test_shards_are_disjoint_and_cover_the_pool() -> None:
    nodes = [load_node_data("synthetic", i, 6, seed=1) for i in range(6)]
    rows = _rows(*(a for n in nodes for a in (n.train.x, n.val.x)))
    assert len(rows) == len(set(rows))  # no sample in two shards or two splits
    test_rows = set(_rows(nodes[0].test.x))
    assert not test_rows & set(rows)  # held-out data never trains


def test_reproducible_by_index_count_and_seed() -> None:
    a = load_node_data("digits:label-shift:3", 2, 7, seed=5)
    b = load_node_data("digits:label-shift:3", 2, 7, seed=5)
    c = load_node_data("digits:label-shift:3", 2, 7, seed=6)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.val.y, b.val.y)
    assert not np.array_equal(a.train.x, c.train.x)


def test_label_shift_permutes_labels_per_concept() -> None:
    k = 4
    base = load_node_data("digits:iid", 0, 8, seed=2)
    perms = [label_permutation(c, 2) for c in range(k)]
    assert np.array_equal(perms[0], np.arange(10))
    assert all(sorted(p) == list(range(10)) for p in perms)
    assert len({tuple(p) for p in perms}) == k  # distinct concepts
    for i in range(8):
        node = load_node_data(f"digits:label-shift:{k}", i, 8, seed=2)
        assert node.concept == i % k
        iid = load_node_data("digits:iid", i, 8, seed=2)
        # same images, labels mapped through the concept's permutation
        assert np.array_equal(node.train.x, iid.train.x)
        assert np.array_equal(node.train.y, perms[i % k][iid.train.y])
        assert np.array_equal(node.test.y, perms[i % k][base.test.y])


def test_rotation_rotates_images() -> None:
    iid = load_node_data("digits:iid", 1, 4, seed=0)
    rot = load_node_data("digits:rotation:4", 1, 4, seed=0)
    assert rot.concept == 1
    assert np.array_equal(rot.train.x, np.rot90(iid.train.x, k=1, axes=(-2, -1)))
    assert np.array_equal(rot.train.y, iid.train.y)
    assert np.array_equal(rot.test.x, np.rot90(iid.test.x, k=1, axes=(-2, -1)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("mnist", "unknown data spec"),
        ("digits:weird", "unknown digits partition"),
        ("digits:label-shift", "K"),
        ("digits:label-shift:x", "integer"),
        ("digits:label-shift:0", "must be in"),
        ("digits:iid:3", "no argument"),
        ("synthetic:1", "must be in"),
        ("npz:", "needs a path"),
        ("npz:/nonexistent/file.npz", "not found"),
    ],
)
def test_bad_specs_raise_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(DataSpecError, match=message):
        load_node_data(spec, 0, 2)
    assert issubclass(DataSpecError, ValueError)


def test_bad_node_numbers() -> None:
    with pytest.raises(DataSpecError, match="node_index"):
        load_node_data("digits", 3, 3)
    with pytest.raises(DataSpecError, match="num_nodes"):
        load_node_data("digits", 0, 0)
    with pytest.raises(DataSpecError, match="too many"):
        load_node_data("digits", 0, 5000)


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "shard.npz"
    np.savez(path, x=rng.random((50, 6, 6)), y=rng.integers(0, 3, 50), concept=np.int64(2))
    data = load_node_data(f"npz:{path}", 0, 1, seed=0)
    assert data.input_shape == (1, 6, 6)  # a channel axis is added to images
    assert data.concept == 2 and data.classes == 3
    assert len(data.train) + len(data.val) + len(data.test) == 50
    assert data.train.x.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 3))}, "lacks"),
        ({"x": np.zeros((10, 3)), "y": np.zeros(9, dtype=int)}, "rows"),
        ({"x": np.zeros((10, 3)), "y": np.zeros(10)}, "integer labels"),
        ({"x": np.zeros((10, 3)), "y": -np.ones(10, dtype=int)}, ">= 0"),
        ({"x": np.zeros(10), "y": np.zeros(10, dtype=int)}, "shape"),
        ({"x": np.zeros((10, 3)), "y": np.zeros((10, 2), dtype=int)}, "shape"),
        ({"x": np.full((10, 3), np.nan), "y": np.zeros(10, dtype=int)}, "NaN"),
        ({"x": np.array([["a"] * 3] * 10), "y": np.zeros(10, dtype=int)}, "numeric"),
        ({"x": np.zeros((3, 3)), "y": np.zeros(3, dtype=int)}, "at least"),
        ({"x": np.zeros((10, 3)), "y": np.zeros(10, dtype=int), "concept": np.zeros(2)}, "scalar"),
    ],
)
def test_npz_bad_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataSpecError, match=message):
        load_node_data(f"npz:{path}", 0, 1)


def test_npz_not_a_zip_and_pickled_objects(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not an npz file")
    with pytest.raises(DataSpecError, match="cannot read"):
        load_node_data(f"npz:{junk}", 0, 1)
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}] * 10, dtype=object), y=np.zeros(10, dtype=int))
    with pytest.raises(DataSpecError):  # object arrays would need pickle: refused
        load_node_data(f"npz:{objects}", 0, 1)
