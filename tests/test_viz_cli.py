"""``mycelium viz`` and ``mycelium bench viz``: usage errors, a headless recorded run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
from click.testing import CliRunner

from cli.main import main


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --bootstrap URL or --peer HOST:PORT"),
        (["--peer", "127.0.0.1:5000", "--size", "big"], "size must look like 960x600"),
        (["--peer", "127.0.0.1:5000", "--size", "10x10"], "out of range"),
        (["--peer", "nohostport"], "is not HOST:PORT"),
        (["--peer", "h:99999"], "is not HOST:PORT"),
        (["--peer", "h:1", "--fps", "0"], "--fps"),
        (["--peer", "h:1", "--duration", "-3"], "--duration"),
    ],
)
def test_usage_errors_are_clear(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["viz", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_unreachable_registry_is_a_clean_error(unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}"
    result = CliRunner().invoke(main, ["viz", "--bootstrap", url, "--headless", "--duration", "1"])
    assert result.exit_code == 1, result.output
    assert url in result.output and "Traceback" not in result.output


@pytest.fixture
def unused_port() -> int:
    """A port nobody listens on: bind port 0, read it, close (no fixed port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulated_run_records_gif_and_png(tmp_path: Path) -> None:
    gif = tmp_path / "sim.gif"
    args = ["viz", "--simulate", "12", "--headless", "--duration", "1.5", "--size", "480x320"]
    result = CliRunner().invoke(main, [*args, "--record", str(gif), "--record-every", "0.1"])
    assert result.exit_code == 0, result.output
    assert "ms/frame" in result.output and str(gif) in result.output
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] >= 5 and frames.shape[1:] == (320, 480, 3)
    assert gif.with_suffix(".png").exists()


def test_bench_viz_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main, ["bench", "viz", "--nodes", "10,30", "--frames", "20", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "frame ms" in result.output
    runs = json.loads(out.read_text())["runs"]
    assert [r["nodes"] for r in runs] == [10, 30]
    assert all(r["frame_ms_mean"] > 0 and r["frames"] == 20 for r in runs)
    bad = CliRunner().invoke(main, ["bench", "viz", "--nodes", "ten"])
    assert bad.exit_code == 2 and "not a list of integers" in bad.output


@pytest.mark.slow
def test_viz_runs_as_a_real_process(tmp_path: Path) -> None:
    gif = tmp_path / "proc.gif"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    mycelium = [sys.executable, "-c", "from cli.main import main; main()"]
    cmd = [*mycelium, "viz", "--simulate", "20", "--headless"]
    cmd += ["--duration", "1", "--record", str(gif), "--size", "480x300"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert gif.exists() and iio.imread(gif, index=None).shape[0] >= 2
    usage = subprocess.run([*mycelium, "viz"], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--bootstrap URL or --peer" in usage.stderr
