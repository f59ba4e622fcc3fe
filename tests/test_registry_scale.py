"""``mycelium bench registry --nodes N``: the scale run's command and JSON (a small run).

The figures themselves come from the benchmark command (``docs/benchmarks.md``); this checks
that the run registers the nodes, restarts the registry, drives every node's heartbeats from
other processes and reports the ``scale`` entry with its keys, expiring nobody.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main


@pytest.mark.slow
def test_scale_run_reports_rate_latency_and_expiries(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    args = ["bench", "registry", "--nodes", "300", "--heartbeat-interval", "1.5"]
    args += ["--seconds", "4", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["runs"] == []
    scale = report["scale"]
    print({k: scale[k] for k in ("target_per_s", "achieved_per_s", "p50_ms", "p99_ms")})
    keys = {"nodes", "target_per_s", "achieved_per_s", "p50_ms", "p99_ms", "wrongly_expired"}
    assert keys <= set(scale)
    assert scale["nodes"] == 300 and scale["target_per_s"] == 200
    assert scale["achieved_per_s"] > 0 and scale["p99_ms"] >= scale["p50_ms"] > 0
    assert scale["wrongly_expired"] == 0
    assert scale["statuses"].get("alive", 0) + scale["statuses"].get("suspect", 0) == 300
    assert "wrongly expired" in result.output


def test_scale_run_refuses_a_sqlite_path_as_db() -> None:
    args = ["bench", "registry", "--nodes", "10", "--db", "some.db"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "postgresql://" in result.output
