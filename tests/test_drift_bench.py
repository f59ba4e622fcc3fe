"""``mycelium bench drift``: drifted nodes on the in-memory network, the figures and the command."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli.bench_drift import parse_seeds
from cli.bench_network import memory_store
from cli.main import main
from mycelium_p2p.testing.drift_bench import DriftSetup, bench_drift, drifters


def test_drifters_are_the_third_the_drift_scenario_draws() -> None:
    assert drifters(12, 0) == [0, 4, 6, 11]
    assert len(drifters(2, 5)) == 1  # at least one node drifts


def test_where_every_concept_fits_each_drifted_node_recovers_and_no_other_moves() -> None:
    # Seeds 0 and 1 leave every concept with at most 5 nodes: one group each can hold them.
    result = bench_drift([0, 1], memory_store, DriftSetup(horizon=10.0))
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for row in result["runs"]:
        assert len(row["drifters"]) == 4
        assert row["fits"] and row["max_per_concept"] <= 5
        times = list(row["recovered_seconds"].values())
        assert sorted(row["recovered_seconds"]) == sorted(str(i) for i in row["drifters"])
        assert None not in times, row
        assert row["slowest"] == max(times) <= 9.0, row
        assert row["others_moved"] == 0, row
    fits = result["summary"]["fits"]
    assert fits["seeds"] == 2 and fits["never"] == 0 and fits["over_threshold"] == 0
    assert fits["max_slowest"] == max(r["slowest"] for r in result["runs"])
    assert result["summary"]["overflows"] == {
        "seeds": 0,
        "median_slowest": None,
        "max_slowest": None,
        "over_threshold": 0,
        "never": 0,
    }
    json.dumps(result)  # a JSON document as it is


def test_the_command_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "drift.json"
    run = CliRunner().invoke(
        main, ["bench", "drift", "--seeds", "0", "--horizon", "5", "--output", str(out)]
    )
    assert run.exit_code == 0, run.output
    assert "Drift at 45 s" in run.output and "every concept fits" in run.output
    document = json.loads(out.read_text())
    assert [r["seed"] for r in document["runs"]] == [0]
    assert document["horizon"] == 5.0 and document["summary"]["fits"]["seeds"] == 1


@pytest.mark.parametrize(
    ("value", "seeds"), [("0-29", list(range(30))), ("0,1,2", [0, 1, 2]), ("3-4,9", [3, 4, 9])]
)
def test_seeds_are_a_range_or_a_list(value: str, seeds: list[int]) -> None:
    assert parse_seeds(click.Context(main), click.Option(["--seeds"]), value) == seeds


@pytest.mark.parametrize("value", ["", "5-2", "3-", "a-b", "1;2"])
def test_other_seeds_are_refused(value: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_seeds(click.Context(main), click.Option(["--seeds"]), value)
