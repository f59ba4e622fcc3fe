"""Wrong flags and unreachable addresses: one clear line, a non-zero exit, no traceback, no hang.

Each case runs the real ``mycelium`` command in a child process with a deadline.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from cli.processes import mycelium_command
from tests.reliability_support import CHILD_ENV

pytestmark = pytest.mark.slow

CASES = {
    # name: (arguments, deadline in seconds, a phrase the error line must contain)
    "join with neither --peer nor --bootstrap": (["join", "--preset", "test"], 60, "--peer"),
    "join through a peer nobody answers at": (
        ["join", "--peer", "127.0.0.1:1", "--preset", "test"],
        90,
        "no peer answered at 127.0.0.1:1",
    ),
    "status of an unreachable registry": (
        ["status", "--bootstrap", "http://127.0.0.1:1"],
        60,
        "cannot read http://127.0.0.1:1",
    ),
    "join with an unknown data spec": (
        ["join", "--peer", "127.0.0.1:1", "--data", "imagenet"],
        60,
        "--data",
    ),
    "join with a port out of range": (["join", "--gossip-port", "70000"], 60, "70000"),
    "join with a malformed peer address": (
        ["join", "--peer", "not-an-address", "--preset", "test"],
        90,
        "not-an-address",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_command_lines_fail_with_one_clear_line(name: str) -> None:
    args, deadline, phrase = CASES[name]
    env = {**os.environ, **CHILD_ENV}
    env.pop("MYCELIUM_TOKEN", None)
    done = subprocess.run(
        mycelium_command(*args), capture_output=True, text=True, timeout=deadline, env=env
    )
    stderr = done.stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    print(f"{name}: exit {done.returncode}: {errors[-1] if errors else stderr[-200:]}")
    assert done.returncode != 0
    assert "Traceback" not in stderr + done.stdout
    assert len(errors) == 1, stderr
    assert phrase in errors[0]
