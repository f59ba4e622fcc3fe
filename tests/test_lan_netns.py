"""Several "machines" on one host: network namespaces joined by a virtual switch.

A switch namespace holds a Linux bridge; each host namespace gets a veth cable to it and one
address 10.77.N.x. The registry runs in the first host, three nodes in the others, each binding
and advertising only its namespace address. Nothing else touches the real host's network: the
cables are created inside the namespaces and every namespace is deleted at the end.

Needs root and iproute2 (``ip``); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.reliability_support import URL_LINE, Processes

pytestmark = pytest.mark.slow

NODES = 3


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
    """A switch namespace with a bridge and ``hosts`` host namespaces cabled to it."""

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
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
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

    def down(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.created.clear()

    def exec_prefix(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host]]

    def fetch(self, host: int, url: str) -> object:
        """GET ``url`` from inside a host namespace (the test's own namespace cannot reach it)."""
        code = (
            "import sys, urllib.request; "
            "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        )
        done = subprocess.run(
            [*self.exec_prefix(host), sys.executable, "-c", code, url],
            capture_output=True,
            text=True,
            timeout=20,
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


def test_groups_form_and_train_across_namespaces(lan: Lan, tmp_path: Path) -> None:
    started = time.monotonic()
    machines = [Processes(tmp_path, prefix=lan.exec_prefix(i)) for i in range(NODES + 1)]
    try:
        registry_host = lan.addresses[0]
        registry = machines[0].start(
            "registry",
            "bootstrap", "--host", registry_host, "--port", "0",
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
        for i in range(1, NODES + 1):
            own = lan.addresses[i]
            machines[i].start(
                f"node{i}",
                "join", "--bootstrap", url, "--preset", "test", "--data", "digits:iid",
                "--node-index", str(i - 1), "--num-nodes", str(NODES), "--name", f"m{i}",
                "--capacity", "5", "--node-address", own, "--bind-host", own,
            )  # fmt: skip

        def trained() -> list | None:
            groups = lan.fetch(0, f"{url}/groups")
            if not isinstance(groups, list) or not groups:
                return None
            members = [m for g in groups for m in g["members"]]
            rounds = [(g.get("metrics") or {}).get("round") or 0 for g in groups]
            accuracies = [(g.get("metrics") or {}).get("accuracy") or 0 for g in groups]
            done = len(members) == NODES and min(rounds) >= 3 and min(accuracies) > 0.5
            return groups if done else None

        groups = wait_for(trained, 150, interval=1.0, what="every node in a group, 3 rounds")
        nodes = lan.fetch(0, f"{url}/nodes")
        assert isinstance(nodes, list) and len(nodes) == NODES
        gossip = sorted(n["gossip_address"].rsplit(":", 1)[0] for n in nodes)
        # Only the namespace addresses: each node advertises its own "machine".
        assert gossip == sorted(lan.addresses[1:])
        for group in groups:
            assert group["flower_address"].rsplit(":", 1)[0] in lan.addresses[1:]
        spanning = max(len(g["members"]) for g in groups)
        rounds = max(g["metrics"]["round"] for g in groups)
        accuracy = max(g["metrics"]["accuracy"] for g in groups)
        print(
            f"LAN (namespaces): {len(groups)} group(s), largest spans {spanning} machines, "
            f"round {rounds}, accuracy {accuracy:.3f}, "
            f"{time.monotonic() - started:.1f}s from start"
        )
        assert spanning >= 2  # training crossed machines
    finally:
        for machine in reversed(machines):
            machine.stop_all()
