"""``mycelium experiment`` on the real system: a small network of user shards sorts itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from mycelium_p2p.learning.data import load_node_data

pytestmark = pytest.mark.slow


def write_shards(folder: Path, nodes: int, concepts: int) -> None:
    """One ``.npz`` per node (``x``, ``y``, ``concept``): label-shifted digits, as a user would."""
    folder.mkdir()
    for index in range(nodes):
        data = load_node_data(f"digits:label-shift:{concepts}", index, nodes, seed=0)
        parts = (data.train, data.val, data.test)
        np.savez(
            folder / f"site-{index}.npz",
            x=np.concatenate([p.x for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            concept=np.int64(data.concept),
        )


def test_six_user_shards_of_two_concepts_end_in_pure_groups(tmp_path: Path) -> None:
    write_shards(tmp_path / "shards", nodes=6, concepts=2)
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        main,
        [
            "experiment",
            *("--shards", str(tmp_path / "shards"), "--capacity", "5", "--duration", "45"),
            *("--no-baselines", "--json", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    for key in ("nodes", "mean_accuracy", "purity", "groups", "migrations", "rounds", "policy"):
        assert key in results
    rows = results["nodes"]
    assert {"name", "shard", "concept", "group", "accuracy"} <= set(rows[0])
    assert sorted(r["shard"] for r in rows) == [f"site-{i}.npz" for i in range(6)]
    assert all(row["group"] for row in rows)
    assert results["purity"] == 1.0
    assert results["groups"] >= 2
    # Each node's group model serves its own held-out data (chance is 0.1).
    assert results["mean_accuracy"] > 0.8


def test_experiment_rejects_both_duration_and_rounds() -> None:
    result = CliRunner().invoke(main, ["experiment", "--duration", "5", "--rounds", "3"])
    assert result.exit_code == 2
    assert "not both" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drift-at", "5"], "--drift-at needs --scenario drift or --drift-shards"),
        (["--drift-shards", "."], "--drift-shards needs --shards"),
        (["--scenario", "drift", "--concepts", "1"], "drift needs at least 2 concepts"),
        (["--nodes", "4", "--arrivals", "2", "--crashes", "2"], "at least one node"),
        (["--seeds", "1,x"], "expected integers"),
    ],
)
def test_experiment_rejects_event_options_that_do_not_fit(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["experiment", "--duration", "5", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_sampler_scores_a_group_model_as_the_node_would() -> None:
    """The experiment scores nodes' group models with its own copy of the model (a sample must
    not queue behind the nodes' training): the same figure as the node's task gives."""
    from mycelium_p2p.experiment.run import GroupModelScorer
    from mycelium_p2p.learning.builtin import ModelTask

    data = load_node_data("digits:label-shift:2", 1, 6, seed=0)
    task = ModelTask(data)
    weights = task.initial_parameters()
    scorer = GroupModelScorer()
    for i in range(3):  # from chance to trained: the figures must follow the weights
        expected = task.evaluate(weights, "test").accuracy
        assert scorer.accuracy(task.spec.key, weights, data.test) == expected
        weights = task.fit(weights, {"seed": i}).parameters
    assert expected > 0.5


def test_a_sample_is_stamped_with_the_time_it_began(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sample reads the nodes one by one; one that began before the drift and ended after it
    was counted as after it, with the drifted nodes still in their old groups and scored on
    their old data: eight of eight 'recovered' in 0 s at 24 nodes."""
    from types import SimpleNamespace

    from mycelium_p2p.experiment import run as run_module
    from mycelium_p2p.learning.builtin import ModelTask

    clock = [1000.0]
    monkeypatch.setattr(run_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    data = load_node_data("digits:label-shift:2", 0, 6, seed=0)
    task = ModelTask(data)

    def slow_weights() -> list[np.ndarray]:
        clock[0] += 4.0  # the node's model takes a while to read
        return task.initial_parameters()

    node = SimpleNamespace(spec=task.spec.key, group_id="g", migrations=0,
                           learning=SimpleNamespace(group_weights=slow_weights))  # fmt: skip
    cluster = SimpleNamespace(live=lambda: {0: node}, by_index={0: node})
    plan = SimpleNamespace(exp=SimpleNamespace(data=[data]))
    watch = run_module._Watch(plan, cluster, started=1000.0)  # type: ignore[arg-type]
    sample = watch.sample()
    assert sample.seconds == 0.0 and watch.elapsed() == 4.0
