"""Local training: it learns, it is reproducible, and evaluation counts right."""

from __future__ import annotations

import numpy as np
import pytest

from mycelium_p2p.learning.data import Split, load_node_data
from mycelium_p2p.learning.models import build_model, get_weights, model_spec
from mycelium_p2p.learning.train import evaluate, limit_threads, train


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_training_raises_digits_accuracy(name: str) -> None:
    data = load_node_data("digits:iid", 0, 2, seed=0)
    model = build_model(model_spec(name, data.input_shape, data.classes), seed=0)
    before = evaluate(model, data.test)
    assert before.accuracy < 0.3  # about chance (0.1) before training
    loss = train(model, data.train, epochs=5, seed=0)
    after = evaluate(model, data.test)
    assert np.isfinite(loss)
    assert after.accuracy > 0.85
    assert after.loss < before.loss
    assert after.examples == len(data.test)


def test_training_is_reproducible_by_seed() -> None:
    data = load_node_data("synthetic", 0, 4, seed=0)
    spec = model_spec("mlp", data.input_shape, data.classes)
    runs = []
    for seed in (3, 3, 4):
        model = build_model(spec, seed=0)
        train(model, data.train, epochs=1, seed=seed)
        runs.append(get_weights(model))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_synthetic_is_learnable() -> None:
    data = load_node_data("synthetic", 0, 2, seed=0)
    model = build_model(model_spec("mlp", data.input_shape, data.classes), seed=0)
    train(model, data.train, epochs=10, seed=0)
    assert evaluate(model, data.test).accuracy > 0.7  # chance is 1/3


def test_proximal_term_keeps_weights_closer() -> None:
    data = load_node_data("digits", 0, 4, seed=0)
    start = get_weights(build_model("mlp:1x8x8:10", seed=0))
    distances = []
    for mu in (0.0, 10.0):
        model = build_model("mlp:1x8x8:10", seed=0)
        train(model, data.train, epochs=2, seed=0, proximal_mu=mu)
        distances.append(
            sum(
                float(np.square(a - b).sum())
                for a, b in zip(get_weights(model), start, strict=True)
            )
        )
    assert distances[1] < distances[0]


def test_empty_split_and_evaluation_counts() -> None:
    model = build_model("mlp:20:3", seed=0)
    empty = Split(np.zeros((0, 20), np.float32), np.zeros(0, np.int64))
    assert evaluate(model, empty).examples == 0
    assert np.isnan(train(model, empty))
    x = np.random.default_rng(0).random((700, 20), dtype=np.float32)
    result = evaluate(model, Split(x, np.zeros(700, np.int64)))  # more than one eval batch
    assert result.examples == 700 and 0.0 <= result.accuracy <= 1.0


def test_limit_threads() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        limit_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
