"""Model specs, weights as bytes, shape checks and the update check."""

from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium_p2p.learning.models import (
    ModelSpecError,
    WeightsError,
    build_model,
    check_update,
    get_weights,
    model_spec,
    parse_spec,
    set_weights,
    weights_from_bytes,
    weights_to_bytes,
)


def test_spec_round_trip() -> None:
    spec = model_spec("mlp", (1, 8, 8), 10)
    assert spec == "mlp:1x8x8:10"
    assert parse_spec(spec) == ("mlp", (1, 8, 8), 10)
    assert model_spec("cnn", [3, 28, 28], 5) == "cnn:3x28x28:5"


@pytest.mark.parametrize(
    "spec",
    ["mlp", "mlp:1x8x8", "rnn:1x8x8:10", "mlp:1xax8:10", "mlp:0x8:10", "mlp:8:1", "cnn:20:3", 7],
)
def test_bad_specs(spec: object) -> None:
    with pytest.raises(ModelSpecError):
        parse_spec(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("mlp:1x8x8:10", (1, 8, 8)),
        ("mlp:20:3", (20,)),
        ("cnn:1x8x8:10", (1, 8, 8)),
        ("cnn:3x28x28:4", (3, 28, 28)),
        ("cnn:1x3x3:2", (1, 3, 3)),
    ],
)
def test_models_map_inputs_to_class_logits(spec: str, shape: tuple[int, ...]) -> None:
    model = build_model(spec)
    out = model(torch.zeros((5, *shape)))
    assert out.shape == (5, parse_spec(spec).classes)


def test_seeded_init_is_reproducible() -> None:
    a, b, c = (get_weights(build_model("cnn:1x8x8:10", seed=s)) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_weights_bytes_round_trip() -> None:
    model = build_model("mlp:1x8x8:10", seed=0)
    weights = get_weights(model)
    data = weights_to_bytes(weights)
    back = weights_from_bytes(data)
    assert [w.shape for w in back] == [w.shape for w in weights]
    assert all(np.array_equal(x, y) for x, y in zip(back, weights, strict=True))
    other = build_model("mlp:1x8x8:10", seed=9)
    set_weights(other, back)
    assert all(np.array_equal(x, y) for x, y in zip(get_weights(other), weights, strict=True))


def _payload(arrays: list[object]) -> bytes:
    return msgpack.packb({"v": 1, "arrays": arrays}, use_bin_type=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00garbage\xff\xfe",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"v": 99, "arrays": []}),
        _payload([["<f4", [2, 2], b"\x00" * 15]]),  # wrong byte count
        _payload([["|O", [1], b"\x00" * 8]]),  # object dtype
        _payload([["<f4", [-1], b""]]),  # negative dimension
        _payload([["<f4", "2x2", b"\x00" * 16]]),
        _payload([["<f4", [2, 2]]]),
        _payload([["<f4", [1] * 20, b"\x00" * 4]]),  # too many dimensions
    ],
)
def test_garbage_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(WeightsError):
        weights_from_bytes(data)


def test_size_cap() -> None:
    data = weights_to_bytes([np.zeros(1000, dtype=np.float32)])
    with pytest.raises(WeightsError, match="cap"):
        weights_from_bytes(data, max_bytes=1000)
    with pytest.raises(WeightsError):
        weights_from_bytes("text")  # type: ignore[arg-type]


def test_set_weights_validates_shapes() -> None:
    model = build_model("mlp:20:3")
    weights = get_weights(model)
    with pytest.raises(WeightsError, match="expected 4 arrays"):
        set_weights(model, weights[:-1])
    bad = [*weights[:-1], np.zeros(7, dtype=np.float32)]
    with pytest.raises(WeightsError, match="shape"):
        set_weights(model, bad)


def test_check_update() -> None:
    ref = get_weights(build_model("mlp:20:3", seed=0))
    honest = [w + 0.01 for w in ref]
    assert check_update(honest, ref) is None
    assert "arrays" in check_update(ref[:-1], ref)
    assert "shape" in check_update([*ref[:-1], np.zeros(9, np.float32)], ref)
    nan = [w.copy() for w in ref]
    nan[0][0, 0] = np.nan
    assert "NaN" in check_update(nan, ref)
    inf = [w.copy() for w in ref]
    inf[1][0] = np.inf
    assert "inf" in check_update(inf, ref)
    assert "norm" in check_update([w * 100 for w in ref], ref)
    assert check_update([w * 2 for w in ref], ref, max_norm_ratio=3) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(WeightsError):
        weights_from_bytes(data)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["<f4", "<f8", "<i8", "|u1", "|O", "<c8", 3]),
            st.lists(st.integers(-2, 5), max_size=4) | st.text(max_size=3),
            st.binary(max_size=64),
        ),
        max_size=4,
    )
)
def test_random_payload_structures_are_validated(entries: list[tuple[object, ...]]) -> None:
    try:
        out = weights_from_bytes(_payload([list(e) for e in entries]))
    except WeightsError:
        return
    assert all(isinstance(a, np.ndarray) for a in out)
