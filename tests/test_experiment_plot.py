"""``mycelium experiment-plot``: results JSON in, a PNG with the events marked out."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli.main import main
from mycelium_p2p.experiment.plot import events, runs_of


def results(seed: int) -> dict:
    return {
        "seed": seed,
        "timeline": [
            {
                "seconds": t,
                "mean_accuracy": min(0.9, t / 20),
                "purity": 1.0,
                "groups": 2,
                "migrations": 0,
            }
            for t in range(0, 60, 5)
        ],
        "baselines": {"global": 0.5, "alone": 0.8, "oracle": 0.93, "ifca": 0.9},
        "drift": {"at": 30.0, "nodes": ["n01"], "recovered_seconds": {"n01": 4.0}},
        "arrivals": [{"name": "n05", "at": 12.0}],
        "departures": [{"name": "n02", "how": "crash", "at": 40.0}],
    }


def test_events_of_a_run_and_runs_of_a_seeds_file() -> None:
    run = results(0)
    assert events(run) == [("drift", 30.0), ("arrival", 12.0), ("crash", 40.0)]
    assert runs_of(run) == [run]
    seeds = {"seeds": [0, 1], "runs": [results(0), results(1)], "summary": {}}
    assert [r["seed"] for r in runs_of(seeds)] == [0, 1]


def test_plot_of_two_files_and_a_clear_error_for_other_json(tmp_path: Path) -> None:
    one, many = tmp_path / "one.json", tmp_path / "seeds.json"
    one.write_text(json.dumps(results(0)))
    many.write_text(json.dumps({"seeds": [0, 1], "runs": [results(0), results(1)]}))
    out = tmp_path / "plot.png"
    args = ["experiment-plot", str(one), str(many), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--title", "one", "--title", "seeds"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"nodes": []}))
    result = CliRunner().invoke(main, ["experiment-plot", str(other), "--out", str(out)])
    assert result.exit_code == 2 and "not results of mycelium experiment" in result.output
    result = CliRunner().invoke(main, [*args, "--title", "only one"])
    assert result.exit_code == 2 and "1 titles for 2 files" in result.output
