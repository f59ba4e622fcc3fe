"""``mycelium demo`` end to end: registry, four node processes, the viewer recording a GIF."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def test_demo_records_a_gif_of_groups_forming_and_leaves_no_process(tmp_path: Path) -> None:
    # Run from a folder holding a ``cli`` package of its own: neither the demo nor the node
    # processes it starts may pick that one up.
    decoy = tmp_path / "cli"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('the decoy cli package was imported')\n")
    gif = tmp_path / "demo.gif"
    command = mycelium_command(
        "demo", "--nodes", "4", "--duration", "40", "--headless", "--record", str(gif)
    )
    done = subprocess.run(
        [*command, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout, whatever is installed
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "decoy" not in output
    url = re.search(r"registry: (http://\S+)", output).group(1)  # type: ignore[union-attr]
    final = re.search(r"final: (\d+) groups", output)
    assert final is not None, output
    assert int(final.group(1)) >= 2  # two concepts of data: two groups
    frames = iio.imread(gif, index=None)
    assert len(frames) >= 20
    assert not np.array_equal(frames[0], frames[-1])
    assert gif.with_suffix(".png").exists()
    assert processes_mentioning(url) == []  # every node process is gone
