"""Poisoning members against the group strategies (real GroupServer and members over gRPC)."""

from __future__ import annotations

import numpy as np
import pytest

from mycelium_p2p.learning.byzantine import (
    ATTACKS,
    PoisoningClient,
    largest_step,
    measure,
    poison,
)
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.learning.flower import GroupServer, make_strategy, robust_minimum
from mycelium_p2p.learning.models import build_model, check_update, get_weights

SPEC = "mlp:1x8x8:10"
ROUNDS = 8


def _norm(weights: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.square(w.astype(np.float64)).sum() for w in weights)))


# --- pure: the attacks --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def honest_pair() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(1)
    base = get_weights(build_model(SPEC, seed=0))
    trained = [w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in base]
    return base, trained


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_passes_the_norm_bound(
    attack: str, honest_pair: tuple[list[np.ndarray], list[np.ndarray]]
) -> None:
    base, honest = honest_pair
    bad = poison(attack, base, honest, rng=np.random.default_rng(0))
    assert check_update(bad, base, 10.0) is None  # a bound alone is no defence
    assert [b.dtype for b in bad] == [h.dtype for h in honest]
    delta = _norm([b - g for b, g in zip(bad, base, strict=True)])
    assert delta > 2 * _norm([h - g for h, g in zip(honest, base, strict=True)])


def test_scaled_attacks_are_cut_just_under_the_bound(
    honest_pair: tuple[list[np.ndarray], list[np.ndarray]],
) -> None:
    base, honest = honest_pair
    for attack in ("scaled", "signflip"):
        bad = poison(attack, base, honest, rng=np.random.default_rng(0), scale=1e6)
        assert _norm(bad) == pytest.approx(0.9 * 10.0 * _norm(base), rel=1e-4)
    flipped = poison("signflip", base, honest, rng=np.random.default_rng(0), scale=2.0)
    for b, g, h in zip(flipped, base, honest, strict=True):
        np.testing.assert_allclose(b - g, -2.0 * (h - g), atol=1e-5)


def test_largest_step_solves_the_norm_equation() -> None:
    base, direction = [np.array([3.0, 4.0])], [np.array([1.0, 0.0])]
    step = largest_step(base, direction, 13.0)
    assert np.linalg.norm(base[0] + step * direction[0]) == pytest.approx(13.0)
    assert largest_step(base, direction, 4.0) == 0.0  # already past the limit
    assert largest_step(base, [np.zeros(2)], 13.0) == float("inf")


def test_bad_attack_names_are_clear_errors() -> None:
    data = load_node_data("digits:iid", 0, 5, seed=0)
    with pytest.raises(ValueError, match="unknown attack"):
        PoisoningClient(data, SPEC, attack="nope")
    with pytest.raises(ValueError, match="unknown attack"):
        measure("fedavg", "nope")


def test_krum_and_bulyan_minimum_group_sizes() -> None:
    weights = get_weights(build_model(SPEC, seed=0))
    assert robust_minimum(make_strategy("krum", weights)) == 5  # 2f + 3, f = 1
    assert robust_minimum(make_strategy("multikrum", weights)) == 5
    assert robust_minimum(make_strategy("bulyan", weights)) == 7  # 4f + 3, f = 1
    assert robust_minimum(make_strategy("median", weights)) == 1


def test_default_group_strategy_is_robust() -> None:
    server = GroupServer(get_weights(build_model(SPEC, seed=0)))
    assert server.strategy_name == "median"


# --- real groups: one poisoning member of five ----------------------------------------------------


@pytest.mark.slow
def test_fedavg_collapses_under_one_poisoning_member() -> None:
    clean = measure("fedavg", None, seed=0, rounds=ROUNDS).accuracy
    assert clean > 0.85
    for attack in ("signflip", "scaled"):
        attacked = measure("fedavg", attack, seed=0, rounds=ROUNDS)
        assert attacked.rejected == 0  # it got past check_update
        assert attacked.accuracy < clean - 0.3, attack


@pytest.mark.slow
def test_the_default_strategy_stays_within_003_of_clean() -> None:
    # Two seeds: over one, the median's signflip loss ranged 0.000-0.025 (docs/security.md).
    seeds = (0, 1)
    clean = np.mean([measure("median", None, seed=s, rounds=ROUNDS).accuracy for s in seeds])
    fedavg_clean = np.mean([measure("fedavg", None, seed=s, rounds=ROUNDS).accuracy for s in seeds])
    assert clean >= fedavg_clean - 0.03  # robustness costs (almost) nothing when all are honest
    for attack in ATTACKS:
        runs = [measure("median", attack, seed=s, rounds=ROUNDS) for s in seeds]
        attacked = np.mean([r.accuracy for r in runs])
        assert attacked >= clean - 0.03, (attack, clean, attacked)


@pytest.mark.slow
def test_bulyan_in_a_group_too_small_falls_back_to_the_median() -> None:
    # Bulyan with f = 1 needs 7 updates; a group of 5 is aggregated by the median instead.
    clean = measure("median", None, seed=1, rounds=ROUNDS).accuracy
    attacked = measure("bulyan", "signflip", seed=1, rounds=ROUNDS)
    assert attacked.fallbacks >= ROUNDS
    assert attacked.accuracy >= clean - 0.03
