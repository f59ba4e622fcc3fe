"""Wrong flags and unreachable addresses: one clear line, a non-zero exit, no traceback, no hang.

Each case runs the real ``mycelium`` command in a child process with a deadline.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import finish_all
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


@pytest.fixture(scope="module")
def outcomes() -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every case at once (each mostly waits), with a deadline each."""
    env = {**os.environ, **CHILD_ENV}
    env.pop("MYCELIUM_TOKEN", None)
    running = {
        name: subprocess.Popen(
            mycelium_command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        for name, (args, _, _) in CASES.items()
    }
    return finish_all(running, lambda name: CASES[name][1])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_command_lines_fail_with_one_clear_line(
    name: str, outcomes: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    done = outcomes[name]
    phrase = CASES[name][2]
    stderr = done.stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    print(f"{name}: exit {done.returncode}: {errors[-1] if errors else stderr[-200:]}")
    assert done.returncode != 0
    assert "hung" not in stderr
    assert "Traceback" not in stderr + done.stdout
    assert len(errors) == 1, stderr
    assert phrase in errors[0]
