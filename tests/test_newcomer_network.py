"""The newcomer's first network: a registry and ``mycelium join`` three times, default settings.

Three real node processes on this machine with label-shifted data (two concepts) and nothing
but ``--bootstrap``: they must take the local preset on their own and sort themselves into pure
groups within 30 s. Then ``mycelium status`` is read the ways a newcomer types it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import wait_for
from tests.reliability_support import (
    CHILD_ENV,
    Child,
    Processes,
    registry_groups,
    registry_nodes,
    start_registry,
)

pytestmark = pytest.mark.slow

NODES = 3
DATA = "digits:label-shift:2"  # nodes 0 and 2 hold concept 0, node 1 concept 1
PURE_WITHIN = 30.0


@dataclass
class Network:
    url: str
    nodes: list[Child]
    started: float  # when the processes were started (monotonic)
    registered: float  # when the registry knew all three
    pure: float | None  # when the groups were first pure (None: not within PURE_WITHIN)
    groups_when_pure: dict[str, list[int]]  # group -> the concepts of its members


def clean_env(**extra: str) -> dict[str, str]:
    """The children's environment: no MYCELIUM_* setting from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYCELIUM_")}
    return {**env, **CHILD_ENV, **extra}


def concepts_by_group(url: str) -> dict[str, list[int]] | None:
    """The concepts of each group's members, if every live node is in a group (else None)."""
    nodes = {i: n for i, n in registry_nodes(url).items() if n["status"] == "alive"}
    groups = registry_groups(url)
    grouped = {m for g in groups.values() for m in g["members"]}
    if len(nodes) < NODES or not set(nodes) <= grouped:
        return None
    return {
        gid: [nodes[m]["data"]["concept"] for m in g["members"] if m in nodes]
        for gid, g in groups.items()
    }


def is_pure(groups: dict[str, list[int]] | None) -> bool:
    return groups is not None and all(len(set(c)) == 1 for c in groups.values() if c)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    folder = tmp_path_factory.mktemp("first-network")
    procs = Processes(folder)
    try:
        _registry, url = start_registry(procs, folder / "registry.db", dead_after=12.0)
        started = time.monotonic()
        nodes = []
        for index in range(NODES):
            args = ["join", "--bootstrap", url, "--data", DATA]
            args += ["--node-index", str(index), "--num-nodes", str(NODES)]
            nodes.append(procs.start(f"node{index}", *args, env=clean_env()))

        def all_registered() -> bool:
            for node in nodes:
                assert node.alive(), node.output()[-3000:]
            alive = [n for n in registry_nodes(url).values() if n["status"] == "alive"]
            return len(alive) == NODES

        wait_for(all_registered, 180, what="three nodes registered")
        registered = time.monotonic()
        pure_at: float | None = None
        groups: dict[str, list[int]] = {}
        while time.monotonic() - registered <= PURE_WITHIN:
            seen = concepts_by_group(url)
            if is_pure(seen):
                pure_at, groups = time.monotonic(), seen or {}
                break
            time.sleep(0.25)
        yield Network(url, nodes, started, registered, pure_at, groups)
    finally:
        procs.stop_all()


def mycelium(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        mycelium_command(*args),
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=60,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    return done


def test_three_joins_with_default_settings_sort_into_pure_groups_within_30s(
    network: Network,
) -> None:
    assert network.pure is not None, f"not pure {PURE_WITHIN:.0f} s after all registered"
    print(
        f"registered {network.registered - network.started:.1f} s after start; pure "
        f"{network.pure - network.registered:.1f} s later; groups {network.groups_when_pure}"
    )
    for node in network.nodes:  # each took the local preset on its own, and said so first
        first = node.output().splitlines()[0]
        assert "mycelium.config" in first and "settings: the local preset" in first
    # A second look, later: still pure (a node moves only to a group that serves it better).
    later = wait_for(lambda: concepts_by_group(network.url), 10, what="every node in a group")
    assert is_pure(later), later


def test_status_takes_the_registry_url_as_people_type_it(network: Network) -> None:
    bare = network.url.removeprefix("http://")
    for typed in (bare, f"{network.url}/docs", f"{bare}/groups/"):
        done = mycelium("status", "--bootstrap", typed, "--no-gossip")
        print(f"status --bootstrap {typed}: exit {done.returncode}")
        assert done.returncode == 0 and "Groups (" in done.stdout, done.stderr


def test_status_fits_80_columns_without_cutting_ids_and_wide_shows_them_whole(
    network: Network,
) -> None:
    narrow = mycelium("status", "--bootstrap", network.url, env=clean_env(COLUMNS="80"))
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    print(narrow.stdout)
    assert max(len(line) for line in lines) <= 80
    assert "…" not in narrow.stdout
    groups = registry_groups(network.url)
    for gid in groups:
        assert gid in narrow.stdout  # group ids whole
    wide = mycelium("status", "--bootstrap", network.url, "--wide", env=clean_env(COLUMNS="80"))
    node_ids = set(registry_nodes(network.url))
    assert node_ids and all(nid in wide.stdout for nid in node_ids)  # 12 hex digits each
    assert max(len(line) for line in wide.stdout.splitlines()) > 80


def test_status_shows_the_age_of_each_figure_and_prefers_the_fresher_source(
    network: Network,
) -> None:
    before = registry_groups(network.url)  # the registry's figures can only get newer
    merged = mycelium("status", "--bootstrap", network.url, "--json")
    assert merged.returncode == 0, merged.stderr
    document = json.loads(merged.stdout)  # JSON alone on stdout
    assert document["source"] == "registry+gossip"
    origins = document["origins"]
    for group in document["groups"]:
        if group["id"] in before:
            assert group["updated_at"] >= before[group["id"]]["updated_at"]
        print(
            f"{group['id']}: round {group['metrics']['round']} from {origins[group['id']]}, "
            f"registry had round {before.get(group['id'], {}).get('metrics', {}).get('round')}"
        )
    table = mycelium("status", "--bootstrap", network.url, env=clean_env(COLUMNS="100"))
    header = next(line for line in table.stdout.splitlines() if line.strip().startswith("group"))
    assert "age" in header and "from" in header
    assert re.search(r"\b\d+[smhd]\b", table.stdout)  # ages like 3s
    assert "the fresher figure of each" in table.stdout


def test_status_through_a_peer_reads_quietly(network: Network) -> None:
    peer = next(iter(registry_nodes(network.url).values()))["gossip_address"]
    done = mycelium("status", "--peer", peer)
    print(done.stderr or "(nothing on stderr)")
    assert done.returncode == 0 and "Groups (" in done.stdout
    assert "gossip is open" not in done.stderr
    assert done.stderr.strip() == ""


def test_every_command_reads_the_registry_from_one_variable(network: Network) -> None:
    done = mycelium("status", "--no-gossip", env=clean_env(MYCELIUM_REGISTRY_URL=network.url))
    assert done.returncode == 0 and "Groups (" in done.stdout and done.stderr == ""
    old = mycelium("status", "--no-gossip", env=clean_env(MYCELIUM_BOOTSTRAP=network.url))
    print(old.stderr.strip())
    assert old.returncode == 0 and "Groups (" in old.stdout
    assert old.stderr.strip() == (
        "Warning: MYCELIUM_BOOTSTRAP is deprecated; set MYCELIUM_REGISTRY_URL instead"
    )
    viz = mycelium(
        "viz", "--headless", "--duration", "1", "--size", "320x240",
        env=clean_env(MYCELIUM_REGISTRY_URL=network.url),
    )  # fmt: skip
    assert viz.returncode == 0 and "frames in" in viz.stdout, viz.stderr
    assert "gossip is open" not in viz.stderr


def test_stay_decisions_are_logged_at_info_with_their_numbers(network: Network) -> None:
    stay = re.compile(r" INFO +mycelium\.node: \S+: stays in g-\w+: stay: g-\w+ scores [01]\.\d+, ")

    def every_node_said_it() -> bool:
        return all(stay.search(node.output()) for node in network.nodes)

    wait_for(every_node_said_it, 60, what="a stay decision of every node in its log")
    print(next(m.group(0) for m in [stay.search(network.nodes[0].output())] if m))


def test_a_node_of_another_shape_says_which_model_the_groups_train(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """28x28 images beside groups of 8x8 digits: the node founds its own group and says why."""
    import numpy as np

    folder = tmp_path_factory.mktemp("other-shape")
    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 28, 28), dtype=np.float32)
    np.savez(folder / "big.npz", x=x, y=np.arange(60) % 10)
    procs = Processes(folder)
    try:
        args = ["join", "--bootstrap", network.url, "--data", f"npz:{folder / 'big.npz'}"]
        node = procs.start("other-shape", *args, env=clean_env())
        reason = "spec mlp:1x8x8:10; none with spec mlp:1x28x28:10: founding one"

        def said_why() -> bool:
            assert node.alive(), node.output()[-3000:]
            return reason in node.output()

        wait_for(said_why, 90, what="the node naming the other model")
        line = next(x for x in node.output().splitlines() if reason in x)
        print(line)
        assert " INFO " in line and "decides to found: " in line
        assert "Traceback" not in node.output()
    finally:
        procs.stop_all()


def node_id(child: Child) -> str | None:
    """The id a ``mycelium join`` process printed."""
    match = re.search(r"^node \S+ \((\w+)\) gossip at", child.output(), re.MULTILINE)
    return match.group(1) if match else None


def test_a_leader_leaving_on_purpose_is_news_for_its_members_not_a_warning(
    network: Network, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Last: it stops a node. The members of its group hear of it at INFO, not as a warning.

    A fourth node with node 2's data makes sure some group has two members.
    """
    procs = Processes(tmp_path_factory.mktemp("fourth"))
    try:
        args = ["join", "--bootstrap", network.url, "--data", DATA, "--node-index", "2"]
        fourth = procs.start("node3", *args, "--num-nodes", str(NODES), env=clean_env())
        children = [*network.nodes, fourth]

        def shared() -> dict | None:
            groups = registry_groups(network.url).values()
            return next((g for g in groups if len(g["members"]) > 1 and g["leader"]), None)

        group = wait_for(shared, 90, what="a group of two")
        by_id = {node_id(c): c for c in children}
        leader = by_id[group["leader"]]
        members = [by_id[m] for m in group["members"] if m != group["leader"]]
        leader.terminate()
        line = f"leader {group['leader']} of {group['id']} is leaving"
        wait_for(lambda: all(line in m.output() for m in members), 30, what=line)
        for member in members:
            said = next(x for x in member.output().splitlines() if line in x)
            print(said)
            assert " INFO " in said and "WARNING" not in said
    finally:
        procs.stop_all()
