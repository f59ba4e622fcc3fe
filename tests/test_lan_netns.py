"""Several "machines" on one host: network namespaces joined by a virtual switch, then cut.

A switch namespace holds Linux bridges; each host namespace gets a veth cable to it and one
address 10.77.N.x. The registry runs in the first host, four nodes in the others, each binding
every interface and advertising the address it found on its route to the registry. Once groups
train across the machines, the leader of the largest group (with one member) is moved to a
bridge of its own: a real partition that cuts gossip, Flower and HTTP alike. Then it heals.
Nothing else touches the real host's network: the cables are created inside the namespaces and
every namespace is deleted at the end.

Needs root and iproute2 (``ip``); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import wait_for
from tests.reliability_support import CHILD_ENV, URL_LINE, Processes

pytestmark = pytest.mark.slow

NODES = 4


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def netns_unavailable() -> str | None:
    """Why this test cannot run here, or None."""
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"mycprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace: {getattr(exc, 'stderr', exc)}"
    ip("netns", "del", probe)
    return None


class Lan:
    """A switch namespace and ``hosts`` host namespaces cabled to it.

    The switch holds two bridges: every cable starts on ``br0``; :meth:`cut` moves some cables
    to ``br1``, which is connected to nothing else, and so splits the LAN in two, for every kind
    of traffic (gossip, Flower, HTTP) at once; :meth:`heal` moves them back.
    """

    def __init__(self, hosts: int) -> None:
        tag = os.getpid() % 100_000
        self.subnet = f"10.77.{tag % 250 + 1}"
        self.switch = f"myc{tag}sw"
        self.hosts = [f"myc{tag}h{i}" for i in range(hosts)]
        self.addresses = [f"{self.subnet}.{i + 1}" for i in range(hosts)]
        self.created: list[str] = []

    def up(self) -> Lan:
        ip("netns", "add", self.switch)
        self.created.append(self.switch)
        for bridge in ("br0", "br1"):
            ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", bridge, "up")
        for i, (ns, address) in enumerate(zip(self.hosts, self.addresses, strict=True)):
            ip("netns", "add", ns)
            self.created.append(ns)
            port = f"port{i}"
            # Both ends are born in namespaces: the host's own interfaces are never touched.
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
               self.switch)  # fmt: skip
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "set", port, "master", "br0")
            ip("-n", self.switch, "link", "set", port, "up")
        return self

    def cut(self, hosts: list[int]) -> None:
        """Put ``hosts`` on a switch of their own: nothing crosses to the others any more."""
        for i in hosts:
            ip("-n", self.switch, "link", "set", f"port{i}", "master", "br1")

    def heal(self) -> None:
        for i in range(len(self.hosts)):
            ip("-n", self.switch, "link", "set", f"port{i}", "master", "br0")

    def down(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.created.clear()

    def exec_prefix(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host]]

    def host_of(self, address: str) -> int:
        """Index of the host whose address is the host part of ``address``."""
        return self.addresses.index(address.rsplit(":", 1)[0])

    def fetch(self, host: int, url: str) -> object:
        """GET ``url`` from inside a host namespace (the test's own namespace cannot reach it)."""
        code = (
            "import sys, urllib.request; "
            "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        )
        return self._json([sys.executable, "-c", code, url], host)

    def status(self, host: int, peer: str) -> dict | None:
        """``mycelium status --peer PEER --json`` run on ``host``: that node's gossip view."""
        return self._json(mycelium_command("status", "--peer", peer, "--json"), host)

    def _json(self, command: list[str], host: int) -> Any:
        done = subprocess.run(
            [*self.exec_prefix(host), *command],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, **CHILD_ENV},
        )
        return json.loads(done.stdout) if done.returncode == 0 else None


@pytest.fixture
def lan() -> Iterator[Lan]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    network = Lan(NODES + 1)
    try:
        yield network.up()
    finally:
        network.down()
        leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert not any(ns in leftovers.stdout for ns in [*network.hosts, network.switch])


def logged_round(text: str, group_id: str) -> int:
    """The highest round of ``group_id`` a node's log mentions (0 if none)."""
    rounds = re.findall(rf"group {re.escape(group_id)} round (\d+)", text)
    return max(map(int, rounds), default=0)


def layout(groups: Iterable[dict]) -> dict[str, tuple]:
    """Each group's leader, term and members: what every view must agree on."""
    return {g["id"]: (g["leader"], g["term"], sorted(g["members"])) for g in groups}


def node_args(url: str, host: int) -> list[str]:
    return [
        "join", "--bootstrap", url, "--preset", "test", "--data", "digits:iid",
        "--node-index", str(host - 1), "--num-nodes", str(NODES), "--name", f"m{host}",
        "--capacity", "5", "--bind-host", "0.0.0.0",
    ]  # fmt: skip


def test_groups_train_across_namespaces_and_survive_a_real_partition(
    lan: Lan, tmp_path: Path
) -> None:
    started = time.monotonic()
    machines = [Processes(tmp_path, prefix=lan.exec_prefix(i)) for i in range(NODES + 1)]
    try:
        registry_host = lan.addresses[0]
        registry = machines[0].start(
            "registry",
            "bootstrap", "--host", registry_host, "--port", "0", "--insecure",
            "--db", str(tmp_path / "registry.db"),
            "--suspect-after", "3", "--dead-after", "6",
        )  # fmt: skip
        match = wait_for(
            lambda: URL_LINE.search(registry.output()) or not registry.alive(),
            30,
            what="the registry's URL",
        )
        assert registry.alive(), registry.output()
        url = match.group(1)
        assert url.startswith(f"http://{registry_host}:")
        # No --node-address: each node advertises the address of its route to the registry.
        nodes = [machines[i].start(f"node{i}", *node_args(url, i)) for i in range(1, NODES + 1)]

        def groups() -> dict[str, dict]:
            listed = lan.fetch(0, f"{url}/groups")
            return {g["id"]: g for g in listed} if isinstance(listed, list) else {}

        def trained() -> dict[str, dict] | None:
            now = groups()
            members = [m for g in now.values() for m in g["members"]]
            rounds = [g["metrics"]["round"] for g in now.values()]
            accuracies = [g["metrics"]["accuracy"] or 0 for g in now.values()]
            done = now and len(members) == NODES and min(rounds) >= 3 and min(accuracies) > 0.5
            return now if done else None

        formed = wait_for(trained, 150, interval=1.0, what="every node in a group, 3 rounds")
        t_formed = time.monotonic() - started
        registered = lan.fetch(0, f"{url}/nodes")
        assert isinstance(registered, list) and len(registered) == NODES
        host_by_id = {n["id"]: lan.host_of(n["gossip_address"]) for n in registered}
        # Only the namespace addresses: each node found and advertises its own "machine".
        assert sorted(host_by_id.values()) == list(range(1, NODES + 1))
        for group in formed.values():
            assert lan.host_of(group["flower_address"]) in host_by_id.values()
        largest = max(formed.values(), key=lambda g: len(g["members"]))
        assert len(largest["members"]) >= 2  # training crossed machines
        print(
            f"LAN (namespaces): {len(formed)} group(s), largest spans "
            f"{len(largest['members'])} machines, round {largest['metrics']['round']}, accuracy "
            f"{largest['metrics']['accuracy']:.3f}, {t_formed:.1f}s from start"
        )

        # --- a real partition: the leader (and one member) lose the registry and the rest -----
        group_id, old_term = largest["id"], largest["term"]
        leader_host = host_by_id[largest["leader"]]
        others = [host_by_id[m] for m in largest["members"] if m != largest["leader"]]
        side_b = [leader_host, *others[:1]] if len(others) >= 2 else [leader_host]
        side_a = [h for h in range(1, NODES + 1) if h not in side_b]
        leader_log = nodes[leader_host - 1]
        b_start = logged_round(leader_log.output(), group_id)
        lan.cut(side_b)
        cut_at = time.monotonic()
        a_start: dict[str, int] = {}

        stranded = [m for m in largest["members"] if host_by_id[m] in side_a]

        def side_a_trains() -> bool:
            # The registry's side: the members cut off from their leader train on, led from
            # their side: one claims term + 1, or (iid data: every group serves them alike)
            # they move to the other group there.
            now = groups()
            for member in stranded:
                record = next((g for g in now.values() if member in g["members"]), None)
                if record is None or record["leader"] is None:
                    return False
                if host_by_id[record["leader"]] not in side_a:
                    return False
                if record["id"] == group_id and record["term"] <= old_term:
                    return False
                first = a_start.setdefault(record["id"], record["metrics"]["round"])
                if record["metrics"]["round"] < first + 2:
                    return False
            return True

        def side_b_trains() -> bool:
            # No registry here: the old leader keeps its group training on gossip and Flower.
            return logged_round(leader_log.output(), group_id) >= b_start + 2

        wait_for(lambda: side_a_trains() and side_b_trains(), 90, interval=1.0,
                 what="two rounds on each side of the cut")  # fmt: skip
        t_train = time.monotonic() - cut_at
        new_term = groups().get(group_id, {}).get("term")
        assert "stepping down" not in leader_log.output()  # nothing told it yet
        partition_rounds = logged_round(leader_log.output(), group_id) - b_start

        # --- heal: one leader per group, every view equal to the registry ---------------------
        lan.heal()
        healed_at = time.monotonic()

        def converged() -> bool:
            truth = groups()
            members = sorted(m for g in truth.values() for m in g["members"])
            if members != sorted(host_by_id) or any(g["leader"] is None for g in truth.values()):
                return False
            leaders = {g["leader"] for g in truth.values()}
            for node in registered:  # each node's gossip view, read from the registry's machine
                seen = lan.status(0, node["gossip_address"])
                if seen is None or layout(seen["groups"]) != layout(truth.values()):
                    return False
                # Nodes announce a Flower address while they lead: the registry's leaders only.
                if {n["id"] for n in seen["nodes"] if n["flower_address"]} != leaders:
                    return False
            return True

        wait_for(converged, 120, interval=1.0, what="one leader per group, equal views")
        t_heal = time.monotonic() - healed_at
        final = groups()
        print(
            f"partition {len(side_a)}|{len(side_b)} machines (registry with the first), leader "
            f"of {group_id} cut off: term {old_term}->{new_term} on the registry's side, two "
            f"rounds on each side by {t_train:.1f}s ({partition_rounds} rounds without the "
            f"registry); after healing one leader per group and every view equal to the "
            f"registry in {t_heal:.1f}s ({len(final)} group(s))"
        )
        for node in nodes:
            assert node.alive(), node.output()[-3000:]
    finally:
        for machine in reversed(machines):
            machine.stop_all()
