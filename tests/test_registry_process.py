"""`mycelium bootstrap` as a real process: SIGKILL it, restart it on the same file, lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from mycelium_p2p.registry_client import RegistryClient
from tests.helpers import RegistryProcess as Registry

MODEL = "mlp:1x8x8:10"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sigkill_and_restart_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    reg = Registry(db)  # durability, not access: every write as an open registry takes it
    try:
        assert reg.wait_for(r"docs: (http\S+/docs)") == f"{reg.url}/docs"
        acked_nodes: list[str] = []
        acked_groups: dict[str, list[str]] = {}
        with RegistryClient(reg.url, retries=0) as c:
            for i in range(30):
                c.register(f"n{i}", f"node {i}", f"127.0.0.1:{7000 + i}", model=MODEL)
                acked_nodes.append(f"n{i}")
            for g in range(3):
                c.create_group(f"g{g}", f"n{g}", "127.0.0.1:1", MODEL, capacity=20, id=f"g{g}")
                acked_groups[f"g{g}"] = [f"n{g}"]
            for i in range(3, 30):
                gid = f"g{i % 3}"
                c.join_group(f"n{i}", gid)
                acked_groups[gid].append(f"n{i}")
            c.claim_leadership("g1", "n4", 2, "127.0.0.1:4")
            c.report_performance("g1", "n4", 2, accuracy=0.7, loss=0.5, round=9, examples=77)
            last_event = c.events()[-1].id
        reg.kill()  # no shutdown, no checkpoint

        reg = Registry(db)  # same file
        with RegistryClient(reg.url) as c:
            nodes = {n.id: n for n in c.nodes()}
            assert sorted(nodes) == sorted(acked_nodes)
            groups = {g.id: g for g in c.groups()}
            assert {gid: sorted(g.members) for gid, g in groups.items()} == {
                gid: sorted(m) for gid, m in acked_groups.items()
            }
            g1 = groups["g1"]
            assert (g1.leader, g1.term, g1.metrics.round) == ("n4", 2, 9)
            assert c.events()[-1].id == last_event
            assert c.health().schema_version == 1
    finally:
        reg.stop()


@pytest.mark.slow
def test_status_command_prints_tables(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    try:
        with RegistryClient(reg.url) as c:
            c.register("alpha", "Alpha", "127.0.0.1:7001", model=MODEL)
            c.create_group("first", "alpha", "127.0.0.1:1", MODEL, id="g-first")
        result = CliRunner().invoke(main, ["status", "--bootstrap", reg.url])
        assert result.exit_code == 0, result.output
        assert "g-first" in result.output and "Alpha" in result.output
        assert "alive" in result.output and "Groups (1)" in result.output
        as_json = CliRunner().invoke(main, ["status", "--bootstrap", reg.url, "--json"])
        snapshot = json.loads(as_json.output)
        assert [(g["id"], g["leader"], g["members"]) for g in snapshot["groups"]] == [
            ("g-first", "alpha", ["alpha"])
        ]
        assert [n["name"] for n in snapshot["nodes"]] == ["Alpha"]
    finally:
        reg.stop()
    result = CliRunner().invoke(main, ["status", "--bootstrap", reg.url])
    assert result.exit_code != 0 and "cannot read" in result.output


@pytest.mark.slow
def test_bench_registry_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "registry", "--requests", "20", "--clients", "1,2", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 8  # baseline + 3 registry endpoints, at 2 concurrency levels
    for run in runs:
        assert {"endpoint", "clients", "requests_per_s", "p50_ms", "p99_ms"} <= set(run)
        assert run["requests"] == 20 and run["requests_per_s"] > 0
        assert run["p99_ms"] >= run["p50_ms"] > 0
    assert "POST /groups/join" in result.output
