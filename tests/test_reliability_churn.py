"""Churn: nodes join and leave (gracefully or by crashing) continuously.

In-process nodes over the real registry, gossip and Flower. Afterwards the registry holds no
slot of a departed node, and this process has no more threads or file descriptors than it had
before the churn (beyond a small allowance for lazily created pools), and its memory has not
grown by more than a few nodes' worth. CI churns for 20 s; ``MYCELIUM_CHURN_SECONDS=180`` churns
for longer, on demand.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections import Counter
from pathlib import Path

import pytest

from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.learning.train import limit_threads
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from tests.helpers import wait_for
from tests.reliability_support import (
    Processes,
    describe,
    registry_groups,
    resources,
    rss_mb,
    start_registry,
    stop_nodes,
    wait_settled,
)

pytestmark = pytest.mark.slow

BASE = 3  # nodes that stay all along
CHURN_SECONDS = float(os.environ.get("MYCELIUM_CHURN_SECONDS", "20"))
MAX_CHURNERS = 3


def fd_kind(fd: str) -> str:
    """socket, pipe, anon_inode:[eventfd], or 'file' for an open descriptor of this process."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "gone"
    return target.split(":")[0] if ":" in target else "file"


def test_churn_leaks_no_slots_threads_or_descriptors(tmp_path: Path) -> None:
    limit_threads()
    rng = random.Random(7)
    # The registry runs in its own process: this process then holds only nodes, whose
    # descriptors and threads are what the test counts.
    procs = Processes(tmp_path)
    _, url = start_registry(procs, tmp_path / "registry.db", dead_after=6.0)
    config = NodeConfig.test().replace(group_capacity=3, registry_url=url)
    datas = [load_node_data("digits:iid", i, 6, seed=0) for i in range(6)]
    made = 0

    def newcomer(prefix: str = "c") -> Node:
        nonlocal made
        made += 1
        node_config = config.replace(name=f"{prefix}-{made}", node_index=made % 6)
        node = Node(node_config, datas[made % 6], node_id=f"{prefix}{made:03d}", rng=rng)
        node.start()
        return node

    everyone: list[Node] = []  # nodes to stop if the test fails; departed ones are dropped

    try:
        # Warm-up: one group trains and leaves, creating the lazily built pools (gRPC, torch,
        # the ZeroMQ context) before the baseline is taken.
        warm = [newcomer("w"), newcomer("w")]
        everyone += warm
        wait_for(lambda: all(n.group_id for n in warm), 60, what="the warm-up group")
        for node in warm:
            node.stop()
        everyone.clear()  # holding on to departed nodes would look like a leak
        fds_before = wait_settled(lambda: resources()[0], 20)
        threads_before = wait_settled(lambda: resources()[1], 20)
        rss_before = rss_mb()
        names_before = {t.name for t in threading.enumerate()}

        base = [newcomer("b") for _ in range(BASE)]
        everyone += base
        wait_for(lambda: all(n.group_id for n in base), 60, what="base nodes in groups")
        per_node = (resources()[0] - fds_before) / BASE  # descriptors one live node holds
        rss_per_node = (rss_mb() - rss_before) / BASE
        counts: Counter[str] = Counter()
        departed: list[weakref.ref[Node]] = []

        def churn(seconds: float) -> None:
            """Nodes come and go for ``seconds``; at the end the churners leave."""
            churners: list[Node] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if len(churners) < MAX_CHURNERS and (not churners or rng.random() < 0.6):
                    churners.append(newcomer())
                    everyone.append(churners[-1])
                    counts["joins"] += 1
                else:
                    gone = churners.pop(rng.randrange(len(churners)))
                    everyone.remove(gone)
                    departed.append(weakref.ref(gone))
                    if rng.random() < 0.3:
                        gone.crash()
                        counts["crashes"] += 1
                    else:
                        gone.stop()
                        counts["leaves"] += 1
                time.sleep(rng.uniform(1.0, 3.0))  # pacing of the churn itself, not a wait
            stop_nodes(churners)
            for node in churners:
                everyone.remove(node)
                departed.append(weakref.ref(node))
            counts["leaves"] += len(churners)

        # A first quarter of the churn grows the pools and allocator arenas to their working
        # size; memory is then compared between its end and the end of the rest.
        churn(CHURN_SECONDS / 4)
        early_joins, rss_early = counts["joins"], rss_mb()
        churn(CHURN_SECONDS * 3 / 4)
        late_joins, rss_late = counts["joins"] - early_joins, rss_mb()
        joins, leaves, crashes = counts["joins"], counts["leaves"], counts["crashes"]

        # The registry forgets every departed node (crashed ones by expiry), leaking no slot.
        base_ids = sorted(n.id for n in base)

        def clean() -> bool:
            groups = registry_groups(url)
            members = [m for g in groups.values() for m in g["members"]]
            return sorted(members) == base_ids and all(n.group_id in groups for n in base)

        try:
            wait_for(clean, 60, interval=0.5, what="registry groups holding only the base nodes")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe(base, url)}") from None
        groups_left = len(registry_groups(url))
        stop_nodes(base)

        # With every node gone, the process is back at its baseline: nothing leaked.
        def back() -> bool:
            fds, threads = resources()
            # A leak of anything per node would leave, after 20 nodes, far more than one
            # node's worth; lazily grown pools (gRPC's pollers) may add a few.
            return fds < fds_before + per_node and threads <= threads_before

        try:
            wait_for(back, 30, interval=0.5, what="descriptors and threads back at the baseline")
        except AssertionError as exc:
            extra = {t.name for t in threading.enumerate()} - names_before
            kinds = Counter(fd_kind(f) for f in os.listdir("/proc/self/fd"))
            raise AssertionError(
                f"{exc}: fds {fds_before}->{resources()[0]}, threads "
                f"{threads_before}->{resources()[1]}, new threads {sorted(extra)}, "
                f"fds by kind {dict(kinds)}"
            ) from None
        fds_after, threads_after = resources()
        # Departed nodes still referenced: reported, not asserted. Usually none; once 1 of 46, in
        # a run where a Flower client logged an exception (the holder not yet found; see "Open"
        # in docs/reliability.md).
        kept = sum(ref() is not None for ref in departed)
        print(
            f"churn {CHURN_SECONDS:.0f}s: {joins} joins, {leaves} leaves, {crashes} crashes; "
            f"registry kept only the {BASE} base nodes ({groups_left} group(s)); with all nodes "
            f"gone fds {fds_before}->{fds_after} (one live node holds {per_node:.0f}), "
            f"threads {threads_before}->{threads_after}; memory with the base nodes "
            f"{rss_early:.0f} MB after the first {early_joins} joins, {rss_late:.0f} MB after "
            f"{late_joins} more (one live node {rss_per_node:.1f} MB); {kept} of "
            f"{len(departed)} departed node objects still referenced"
        )
        # Only a gross leak is caught here (allocator noise is several MB, and 20 s makes few
        # joins): less than a whole node's footprint per join, plus 10 MB.
        assert rss_late - rss_early < late_joins * max(rss_per_node, 3.0) + 10.0
    finally:
        stop_nodes(everyone)
        procs.stop_all()
