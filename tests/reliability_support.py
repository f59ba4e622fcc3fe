"""Helpers of the reliability tests: registry and node processes, an observer, a partition.

Everything here drives the real parts: ``mycelium bootstrap`` and ``mycelium join`` as child
processes (so that SIGKILL is a real crash), a gossip observer over ZeroMQ, the registry over HTTP.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from mycelium_p2p import snapshot, view
from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip import GossipNode, transport
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.registry_client import RegistryClient, RegistryError, RegistryUnavailable
from mycelium_p2p.snapshot import Snapshot
from mycelium_p2p.testing.processes import mycelium_command
from tests.helpers import wait_for

URL_LINE = re.compile(r"registry listening on (http://\S+)")
# Child processes must find the project and stay quiet and offline.
CHILD_ENV = {
    "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "OMP_NUM_THREADS": "1",
}


def read_text(path: Path) -> str:
    """The file's text so far ('' while it does not exist)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass
class Child:
    """One child process with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, no graceful leave, sockets just vanish."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, grace: float = 10.0) -> None:
        """SIGTERM (graceful leave), SIGKILL after ``grace`` seconds."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return read_text(self.log)


@dataclass
class Processes:
    """Children started by one test, every one of them stopped at the end (SIGKILL if need be)."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    prefix: Sequence[str] = ()

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        log = self.log_dir / f"{name}-{len(self.children)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*self.prefix, *mycelium_command(*args)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **CHILD_ENV, **(env or {})},
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in self.children:
            if child.alive():
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                child.kill()


def start_registry(
    procs: Processes,
    db: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    dead_after: float = 4.0,
    timeout: float = 30.0,
) -> tuple[Child, str]:
    """Run ``mycelium bootstrap`` and return it with its URL (read from its first line)."""
    args = ["bootstrap", "--host", host, "--port", str(port), "--db", str(db)]
    args += ["--suspect-after", str(dead_after / 2), "--dead-after", str(dead_after)]
    args += ["--sweep-interval", "0.5"]
    if token:
        args += ["--token", token]
    child = procs.start("registry", *args)

    def url() -> str | None:
        if not child.alive():
            raise AssertionError(f"registry exited:\n{child.output()[-2000:]}")
        match = URL_LINE.search(child.output())
        return match.group(1) if match else None

    return child, wait_for(url, timeout, what="the registry's URL")


def start_node(
    procs: Processes,
    url: str,
    index: int,
    num: int,
    *,
    data: str = "digits:iid",
    capacity: int = 5,
    extra: Sequence[str] = (),
) -> Child:
    """Run ``mycelium join`` with the test preset for shard ``index`` of ``num``."""
    args = ["join", "--bootstrap", url, "--preset", "test", "--data", data]
    args += ["--node-index", str(index), "--num-nodes", str(num), "--name", f"p{index}"]
    args += ["--capacity", str(capacity), *extra]
    return procs.start(f"node{index}", *args)


def registry_groups(url: str, token: str | None = None) -> dict[str, dict]:
    """The registry's live groups by id (empty while it cannot be reached)."""
    try:
        with RegistryClient(url, token=token, retries=0, timeout=3.0) as client:
            return {g.id: msgspec.to_builtins(g) for g in client.groups()}
    except (RegistryUnavailable, RegistryError):
        return {}


def registry_nodes(url: str) -> dict[str, dict]:
    """The registry's nodes by id (empty while it cannot be reached)."""
    try:
        with RegistryClient(url, retries=0, timeout=3.0) as client:
            return {n.id: msgspec.to_builtins(n) for n in client.nodes()}
    except (RegistryUnavailable, RegistryError):
        return {}


class Observer:
    """A gossip observer (belongs to no group) that watches a network from the test process."""

    def __init__(self, seeds: Iterable[str], secret: str | None = None) -> None:
        self.node = GossipNode(
            f"obs-{uuid.uuid4().hex[:6]}",
            GossipConfig.test(),
            meta={"name": "observer", "role": "observer"},
            observer=True,
            secret=secret,
        )
        self.node.start()
        seeds = list(seeds)
        wait_for(lambda: self.node.join(seeds, timeout=2.0), 30, what=f"gossip answer from {seeds}")

    def snapshot(self) -> Snapshot:
        """The network as this observer sees it (the viewer's and ``status``'s rules)."""
        members = [m for m in self.node.members() if m.id != self.node.node_id]
        return snapshot.from_gossip(members, self.node.groups())

    def groups(self) -> dict[str, GroupRecord]:
        """Live group records (zombies left out, as every reader does)."""
        records = self.node.groups()
        return {g.id: records[g.id] for g in self.snapshot().groups}

    def live(self) -> set[str]:
        """Ids of live nodes (observers left out)."""
        return {
            m.id
            for m in self.node.members()
            if m.status in view.LIVE_STATUSES and m.node_meta.role != "observer"
        }

    def members_of(self, group_id: str) -> set[str]:
        return set(self.node.group_members(group_id))

    def id_of(self, name: str) -> str | None:
        """Node id of the member whose metadata name is ``name``."""
        return next((m.id for m in self.node.members() if m.node_meta.name == name), None)

    def close(self) -> None:
        self.node.stop()


def resources() -> tuple[int, int]:
    """(open file descriptors, live threads) of this process, after a garbage collection.

    The collection matters: an unreachable gRPC server keeps its worker threads until its
    thread pool is collected, which the cyclic collector may not have done yet.
    """
    gc.collect()
    return len(os.listdir("/proc/self/fd")), threading.active_count()


def rss_mb() -> float:
    """Resident memory of this process in MB (after a garbage collection)."""
    gc.collect()
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def wait_settled(probe: Callable[[], int], timeout: float, rounds: int = 3) -> int:
    """Poll ``probe`` until it returns the same value ``rounds`` times running; return it."""
    deadline = time.monotonic() + timeout
    last, same = probe(), 0
    while time.monotonic() < deadline and same < rounds:
        time.sleep(0.5)
        value = probe()
        same = same + 1 if value == last else 0
        last = value
    return last


class Partition(transport.Partition):
    """Cut gossip between two sets of in-process nodes at their transports, then heal it.

    Give ``partition.wrap`` to each node as the wrapper of its gossip transport (``Node`` and
    ``LocalCluster``: ``wrap_gossip_transport``); frames to an address on the other side are
    dropped (and counted in ``dropped``), as a broken switch would. Both directions are cut
    because both sides wrap their own transports.
    """


def describe(nodes: Iterable[object], url: str) -> str:
    """The registry's groups and each node's phase, group and gossip view (for failure messages)."""
    lines = [f"registry: { {g: sorted(r['members']) for g, r in registry_groups(url).items()} }"]
    for node in nodes:
        seen = {g: (sorted(r.members), r.leader, r.term) for g, r in node.gossip.groups().items()}  # type: ignore[attr-defined]
        lines.append(f"  {node.id} {node.phase} {node.group_id} term {node.term}: {seen}")  # type: ignore[attr-defined]
    return "\n".join(lines)


def stop_nodes(nodes: Iterable[object]) -> None:
    """Stop in-process nodes in parallel (each graceful leave takes a few seconds)."""
    threads = [threading.Thread(target=node.stop) for node in nodes]  # type: ignore[attr-defined]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
