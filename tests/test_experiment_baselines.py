"""Baselines, the in-process simulation and the report of the experiment (real torch, real data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from mycelium_p2p.experiment.baselines import oracle_groups, run_baselines
from mycelium_p2p.experiment.engine import BatchEngine
from mycelium_p2p.experiment.report import build_results, compare, plot_accuracy, purity
from mycelium_p2p.experiment.scenarios import (
    ExperimentData,
    load_scenario,
    load_shards,
    scenario_spec,
)
from mycelium_p2p.experiment.simulate import simulate
from mycelium_p2p.learning.data import DataSpecError

# --- pure helpers --------------------------------------------------------------------------------


def test_purity_is_size_weighted_majority_share() -> None:
    assert purity({"a": [0, 0, 0], "b": [1, 1]}) == 1.0
    assert purity({"a": [0, 0, 1], "b": [1]}) == pytest.approx(3 / 4)
    assert purity({"a": [0, 1], "b": []}) == 0.5
    assert purity({}) is None
    assert purity({"a": [0, None]}) is None


def test_oracle_groups_split_concepts_to_respect_capacity() -> None:
    concepts = [i % 3 for i in range(30)]  # 10 nodes per concept
    groups = oracle_groups(concepts, 5)
    assert len(groups) == 6
    assert all(len(g) <= 5 for g in groups)
    assert all(len({concepts[i] for i in g}) == 1 for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(30))
    # 7 nodes under capacity 5: two balanced chunks (4 + 3), not 5 + 2.
    assert sorted(len(g) for g in oracle_groups([0] * 7, 5)) == [3, 4]
    with pytest.raises(ValueError, match="concept"):
        oracle_groups([0, None], 5)


def test_average_weights_by_examples() -> None:
    a = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
    b = [np.ones((2, 2), np.float32), np.full(2, 4.0, np.float32)]
    c = [np.full((2, 2), 9.0, np.float32), np.full(2, 9.0, np.float32)]
    stack = BatchEngine.from_numpy([a, b, c])
    avg = BatchEngine.average(stack, [[0, 1], [2]], [1, 3, 5])
    assert np.allclose(avg[0][0].numpy(), 0.75) and np.allclose(avg[1][0].numpy(), 3.0)
    assert np.allclose(avg[0][1].numpy(), 9.0)
    assert avg[0].dtype == torch.float32
    # No examples at all: an even mean (FedAvg's convention).
    assert np.allclose(BatchEngine.average(stack, [[0, 1]], [0, 0, 0])[1][0].numpy(), 2.0)
    with pytest.raises(ValueError):
        BatchEngine.average(stack, [[]], [1, 1, 1])


def test_scenario_spec_and_bad_input() -> None:
    assert scenario_spec("iid", 4) == "digits:iid"
    assert scenario_spec("label-shift", 3) == "digits:label-shift:3"
    with pytest.raises(ValueError, match="scenario"):
        scenario_spec("weird", 2)
    with pytest.raises(ValueError):
        load_scenario("iid", 0, 1)


def test_build_results_has_the_fixed_keys() -> None:
    rows = [
        {"name": "a", "shard": "a.npz", "concept": 0, "group": "g1", "accuracy": 0.9},
        {"name": "b", "shard": "b.npz", "concept": 1, "group": "g1", "accuracy": 0.5},
    ]
    out = build_results(nodes=rows, rounds=3, wall_seconds=1.5, migrations=2, policy="probe")
    for key in (
        "nodes", "mean_accuracy", "purity", "groups", "migrations", "rounds", "wall_seconds",
        "baselines", "policy",
    ):  # fmt: skip
        assert key in out
    assert out["mean_accuracy"] == 0.7 and out["purity"] == 0.5 and out["groups"] == 1
    assert out["baselines"] == {"global": None, "alone": None, "oracle": None, "ifca": None}
    assert set(out["nodes"][0]) == {"name", "shard", "concept", "group", "accuracy"}
    json.dumps(out)
    with pytest.raises(ValueError, match="lacks"):
        build_results(nodes=[{"name": "a"}], rounds=1, wall_seconds=0, migrations=0, policy="x")
    with pytest.raises(ValueError, match="clash"):
        build_results(nodes=rows, rounds=1, wall_seconds=0, migrations=0, policy="x", purity=1)


# --- real training ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def label_shift_8() -> ExperimentData:
    return load_scenario("label-shift", 8, 2, seed=0)


@pytest.mark.slow
def test_baselines_order_on_label_shift(label_shift_8: ExperimentData) -> None:
    res = run_baselines(label_shift_8, capacity=5, rounds=8, epochs=2, seed=0)
    assert set(res) == {"global", "alone", "oracle", "ifca"}
    for r in res.values():
        assert len(r.accuracies) == 8 and len(r.history) == 8
        assert all(0.0 <= a <= 1.0 for a in r.accuracies)
        assert r.mean == pytest.approx(float(np.mean(r.accuracies)))
    # Two label permutations cannot both be fit by one model; concept groups can.
    assert res["oracle"].mean > res["global"].mean + 0.15
    assert res["oracle"].groups == 2 and res["global"].groups == 1 and res["alone"].groups == 8
    assert res["ifca"].groups <= 2


@pytest.mark.slow
def test_probe_simulation_ends_pure_on_label_shift(label_shift_8: ExperimentData) -> None:
    sim = simulate(capacity=5, policy_mode="probe", rounds=14, seed=0, data=label_shift_8)
    assert sim.purity == 1.0, sim.decisions
    assert sim.mean_accuracy > 0.8
    assert {row["group"] for row in sim.nodes} == {r["group"] for r in sim.nodes if r["group"]}
    sizes: dict[str, int] = {}
    for row in sim.nodes:
        sizes[row["group"]] = sizes.get(row["group"], 0) + 1
    assert max(sizes.values()) <= 5  # capacity held
    assert len(sim.history) == 14
    assert all(
        ("improve" in d or "merge" in d or "found" in d or "no group" in d) for d in sim.decisions
    )


def test_load_shards_from_npz_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, concept in (("alice", 0), ("bob", 1)):
        np.savez(
            tmp_path / f"{name}.npz",
            x=rng.random((40, 6)).astype(np.float32),
            y=rng.integers(0, 3, 40),
            concept=np.int64(concept),
        )
    (tmp_path / "notes.txt").write_text("ignored")
    exp = load_shards(tmp_path)
    assert exp.names == ("alice", "bob") and exp.shards == ("alice.npz", "bob.npz")
    assert exp.concepts == [0, 1]
    sim = simulate(capacity=2, rounds=2, seed=1, data=exp)
    assert [r["shard"] for r in sim.nodes] == ["alice.npz", "bob.npz"]
    with pytest.raises(DataSpecError):
        load_shards(tmp_path / "missing")


def test_compare_writes_json_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with open(tmp_path / "table.txt", "w") as table:
        out = compare(
            "label-shift", 4, 2, 5, ["probe", "reported"], rounds=2, seed=0,
            json_path=tmp_path / "r.json", plot_path=tmp_path / "r.png",
            console=Console(file=table, width=120),
        )  # fmt: skip
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved["runs"]) == {"probe", "reported"} == set(out["runs"])
    run = saved["runs"]["probe"]
    assert len(run["nodes"]) == 4 and run["policy"] == "probe"
    assert set(run["baselines"]) == {"global", "alone", "oracle", "ifca"}
    assert all(isinstance(v, float) for v in run["baselines"].values())
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "baseline oracle" in (tmp_path / "table.txt").read_text()


def test_plot_accuracy_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_accuracy(
        {"probe": [0.2, 0.5, 0.9], "baseline global": [0.3, 0.4, 0.4]}, tmp_path / "p.png"
    )
    assert path.stat().st_size > 1000
