"""A node restarted with its state folder is the same node: same id, no stale entry left behind.

Real processes: a registry, a node with ``--state-dir``, and a second node whose gossip view must
see the restarted node alive again under its old id (SWIM: it refutes the "left" it finds about
itself). A second node on the same folder while the first runs is refused in one line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import wait_for
from tests.reliability_support import CHILD_ENV, Child, Processes, registry_nodes, start_registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYCELIUM_")}
    return {**env, **CHILD_ENV}


def printed_id(child: Child) -> str | None:
    """The id a ``mycelium join`` process printed when it started."""
    assert child.alive(), child.output()[-3000:]
    match = re.search(r"^node \S+ \((\w+)\) gossip at", child.output(), re.MULTILINE)
    return match.group(1) if match else None


def gossip_status(peer: str, node_id: str) -> str | None:
    """``node_id``'s status in ``peer``'s gossip view (read with ``mycelium status --peer``)."""
    done = subprocess.run(
        mycelium_command("status", "--peer", peer, "--json"),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    nodes = {n["id"]: n for n in json.loads(done.stdout)["nodes"]}
    return nodes[node_id]["status"] if node_id in nodes else None


def test_a_node_restarted_with_its_state_folder_keeps_its_id(tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    try:
        _registry, url = start_registry(procs, tmp_path / "registry.db", dead_after=12.0)
        state = tmp_path / "state"
        args = ["join", "--bootstrap", url, "--data", "digits", "--state-dir", str(state)]
        first = procs.start("first", *args, env=clean_env())
        other = procs.start(
            "other", "join", "--bootstrap", url, "--data", "digits", env=clean_env()
        )
        kept = wait_for(lambda: printed_id(first), 120, what="the first node's id")
        other_id = wait_for(lambda: printed_id(other), 120, what="the other node's id")
        assert (state / "node-id").read_text().strip() == kept

        def in_a_group(node_id: str) -> bool:
            node = registry_nodes(url).get(node_id)
            return node is not None and node["status"] == "alive" and bool(node["group"])

        wait_for(lambda: in_a_group(kept), 90, what="the first node in a group")

        # A second node on the same folder would share the id: refused, in one line.
        twin = subprocess.run(
            mycelium_command(*args), capture_output=True, text=True, env=clean_env(), timeout=180
        )
        errors = [x for x in twin.stderr.splitlines() if x.startswith("Error:")]
        print(f"twin: exit {twin.returncode}: {errors}")
        assert twin.returncode == 1 and "Traceback" not in twin.stderr, twin.stderr[-3000:]
        assert errors == [
            f"Error: --state-dir: state folder {state} is in use by another running node"
        ]

        # A graceful leave; the process itself may take long to exit on a loaded machine (then
        # it is killed, which releases the folder's lock all the same).
        first.terminate(grace=60)
        assert "leaving -> stopped (left)" in first.output(), first.output()[-3000:]
        wait_for(lambda: registry_nodes(url)[kept]["status"] == "gone", 30, what="gone")

        again = procs.start("again", *args, env=clean_env())
        assert wait_for(lambda: printed_id(again), 120, what="the restarted node's id") == kept
        wait_for(lambda: in_a_group(kept), 90, what="the restarted node in a group again")
        peer = registry_nodes(url)[other_id]["gossip_address"]
        wait_for(
            lambda: gossip_status(peer, kept) == "alive", 60, what="alive in the other's gossip"
        )
        nodes = registry_nodes(url)
        print({i: (n["status"], n["group"]) for i, n in nodes.items()})
        assert set(nodes) == {kept, other_id}  # no stale entry of a former self
    finally:
        procs.stop_all()
