"""``mycelium experiment`` on the real system: a small label-shifted network sorts itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main

pytestmark = pytest.mark.slow


def test_six_nodes_two_concepts_end_in_pure_groups(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        main,
        [
            "experiment",
            *("--scenario", "label-shift", "--nodes", "6", "--concepts", "2"),
            *("--capacity", "5", "--duration", "45", "--no-baselines", "--json", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    for key in ("nodes", "mean_accuracy", "purity", "groups", "migrations", "rounds"):
        assert key in results
    assert {"name", "shard", "concept", "group", "accuracy"} <= set(results["nodes"][0])
    assert all(row["group"] for row in results["nodes"])
    assert results["purity"] == 1.0
    assert results["groups"] >= 2
    # Each node's group model serves its own held-out data (chance is 0.1).
    assert results["mean_accuracy"] > 0.8


def test_experiment_rejects_both_duration_and_rounds() -> None:
    result = CliRunner().invoke(main, ["experiment", "--duration", "5", "--rounds", "3"])
    assert result.exit_code == 2
    assert "not both" in result.output
