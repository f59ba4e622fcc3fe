"""``mycelium bootstrap`` as a newcomer meets it: every failure is one line and a clear exit status.

Each case runs the real command in a child process and checks the one ``Error:`` line on stderr,
the exit status and that no traceback is printed. Plus: the open-registry guard (no token: loopback
only), one registry per database file, a clean exit on SIGTERM, and the retention of dead nodes
(a unit test on a fake clock).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from bootstrap.store import LivenessConfig, RegistryStore
from mycelium_p2p.registry_api import RegisterBody
from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import RegistryProcess, wait_for
from tests.reliability_support import CHILD_ENV, URL_LINE, Processes

MODEL = "mlp:1x8x8:10"


def run_bootstrap(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``mycelium bootstrap ARGS`` to its end (it must fail: a deadline catches a hang)."""
    env = {**os.environ, **CHILD_ENV}
    env.pop("MYCELIUM_TOKEN", None)
    command = mycelium_command("bootstrap", *args)
    try:
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{command} did not exit within {timeout}s: {exc.stderr}") from exc


def assert_one_line(done: subprocess.CompletedProcess[str], status: int, phrase: str) -> None:
    lines = done.stderr.strip().splitlines()
    print(f"exit {done.returncode}: {lines[-1] if lines else '(nothing on stderr)'}")
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("Error:"), done.stderr[-3000:]
    assert phrase in lines[0]
    assert done.returncode == status


def started(procs: Processes, *args: str, env: dict[str, str] | None = None) -> str:
    """Start ``mycelium bootstrap ARGS``; return its output once it printed its URL."""
    child = procs.start("registry", "bootstrap", *args, env=env)
    wait_for(
        lambda: URL_LINE.search(child.output()) or not child.alive(), 30, what="the registry's URL"
    )
    assert child.alive(), child.output()
    return child.output()


# ---- 5. no token, no network ---------------------------------------------------------------


@pytest.mark.slow
def test_without_a_token_the_registry_stays_on_loopback(tmp_path: Path, procs: Processes) -> None:
    refused = run_bootstrap("--host", "0.0.0.0", "--port", "0", "--db", "r.db", cwd=tmp_path)
    assert_one_line(refused, 2, "--token")
    assert not (tmp_path / "r.db").exists()  # refused before touching anything
    no_env_token = {"MYCELIUM_TOKEN": ""}
    alone = started(procs, "--port", "0", "--db", str(tmp_path / "a.db"), env=no_env_token)
    with_token = started(
        procs, "--port", "0", "--db", str(tmp_path / "b.db"), env={"MYCELIUM_TOKEN": "s3cret"}
    )
    insecure = started(
        procs, "--host", "0.0.0.0", "--insecure", "--port", "0", "--db", str(tmp_path / "c.db"),
        env=no_env_token,
    )  # fmt: skip
    for name, output in (("no token", alone), ("token", with_token), ("--insecure", insecure)):
        print(f"{name}: {next(x for x in output.splitlines() if 'listening' in x)}")
    assert "(bound 127.0.0.1)" in alone and "open (no token)" in alone
    assert "(bound 0.0.0.0)" in with_token and "open (no token)" not in with_token
    assert "(bound 0.0.0.0)" in insecure and "--insecure" in insecure


# ---- 6. the newcomer's report ---------------------------------------------------------------


@pytest.mark.slow
def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_bootstrap("--port", str(port), "--db", "r.db", cwd=tmp_path)
    assert_one_line(done, 1, f"cannot listen on 127.0.0.1:{port}")


@pytest.mark.slow
def test_an_address_not_on_this_machine_is_one_line(tmp_path: Path) -> None:
    # Binding fails at once (nothing is sent to that address).
    args = ("--host", "10.255.255.1", "--insecure", "--port", "0", "--db", "r.db")
    assert_one_line(run_bootstrap(*args, cwd=tmp_path), 1, "cannot listen on 10.255.255.1")


@pytest.mark.slow
def test_a_database_in_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    done = run_bootstrap("--port", "0", "--db", "nodir/x.db", cwd=tmp_path)
    assert_one_line(done, 1, "nodir/x.db")


@pytest.mark.slow
def test_one_registry_per_database_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    first = RegistryProcess(db)
    try:
        second = run_bootstrap("--port", "0", "--db", str(db), cwd=tmp_path)
        assert_one_line(second, 1, "in use by another registry")
        first.proc.send_signal(signal.SIGTERM)
        status = first.proc.wait(15)
        lines = list(first.output)
        while True:  # the process is gone: what is left of its output is already in the pipe
            try:
                lines.append(first.lines.get(timeout=2))
            except queue.Empty:
                break
        output = "".join(lines)
        print(f"SIGTERM: exit status {status}")
        assert status == 0 and "Traceback" not in output, output[-3000:]
    finally:
        first.stop()
    again = RegistryProcess(db)  # the lock went with the first registry
    again.stop()
    assert again.proc.returncode == 0


def test_dead_and_gone_nodes_are_forgotten_after_the_retention(tmp_path: Path) -> None:
    clock = [1000.0]
    liveness = LivenessConfig(suspect_after=10, dead_after=30, retention=3600)
    store = RegistryStore(tmp_path / "r.db", liveness, clock=lambda: clock[0])
    store.open()
    try:
        for node_id in ("dies", "leaves", "lives"):
            store.register(RegisterBody(id=node_id, name=node_id, gossip_address="h:1"))
        store.remove("leaves")
        clock[0] += 31
        store.register(RegisterBody(id="lives", name="lives", gossip_address="h:1"))
        store.sweep()
        assert {n.id: n.status for n in store.nodes()} == {
            "dies": "dead",
            "leaves": "gone",
            "lives": "alive",
        }
        clock[0] += 3600 - 31  # an hour after "dies" and "leaves" were last seen: kept
        store.sweep()
        assert len(store.nodes()) == 3
        clock[0] += 1  # past the hour: forgotten; the live node stays (it went dead meanwhile)
        store.sweep()
        assert [n.id for n in store.nodes()] == ["lives"]
        kinds = {(e.node, e.kind) for e in store.events()}
        assert {("dies", "expired"), ("leaves", "removed")} <= kinds  # history stays
    finally:
        store.close()
