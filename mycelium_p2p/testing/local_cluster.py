"""A registry and N nodes in one process on loopback: the harness of experiments and benchmarks.

Everything is real (HTTP registry on a SQLite file, gossip over ZeroMQ TCP, Flower over gRPC);
only the processes are shared, which lets 30 nodes fit on two cores. The registry comes from the
caller (``bootstrap.server.cluster_registry``), so that this package does not depend on it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from mycelium_p2p.gossip.transport import Transport
from mycelium_p2p.learning.data import NodeData
from mycelium_p2p.learning.train import limit_threads
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig


class Registry(Protocol):
    """A registry served on a thread of this process."""

    def start(self) -> str:
        """Serve; return its URL."""
        ...

    def stop(self) -> None: ...


#: ``registry(db_path, token, suspect_after, dead_after)``: a registry to start.
RegistryFactory = Callable[[Path, str | None, float, float], Registry]


class LocalCluster:
    """Start a registry, then ``len(datas)`` nodes that find each other through it.

    Parameters
    ----------
    datas
        One data set per node (node ``i`` gets ``datas[i]``).
    registry
        Makes the registry (``bootstrap.server.cluster_registry``).
    config
        Settings shared by all nodes (default: ``NodeConfig.test()``).
    db_path
        The registry's SQLite file (default: a new temporary file).
    names
        Node names (default: ``node-00``, ``node-01``, ...).
    wrap_gossip_transport
        Applied to every node's gossip transport, e.g. ``Partition.wrap`` (default: None).
    """

    def __init__(
        self,
        datas: Sequence[NodeData],
        config: NodeConfig | None = None,
        *,
        registry: RegistryFactory,
        db_path: Path | None = None,
        names: Sequence[str] | None = None,
        wrap_gossip_transport: Callable[[Transport], Transport] | None = None,
    ) -> None:
        self.datas = list(datas)
        self.config = config or NodeConfig.test()
        self._tmp = tempfile.TemporaryDirectory(prefix="mycelium-cluster-")
        self.db_path = db_path or Path(self._tmp.name) / "registry.db"
        self.names = list(names or [f"node-{i:02d}" for i in range(len(self.datas))])
        # Dozens of nodes share two cores here: allow for late heartbeats before calling a node
        # suspect (5 missed) or dead (10 missed, and never under 15 s).
        hb = self.config.registry.heartbeat_interval
        self.registry = registry(
            self.db_path, self.config.network.token, max(5.0, 5 * hb), max(15.0, 10 * hb)
        )
        self.url = ""
        self.nodes: list[Node] = []  # every node started, in start order
        self.by_index: dict[int, Node] = {}
        self.departed: set[int] = set()  # indices of nodes that left or crashed
        self._wrap = wrap_gossip_transport

    def start(self, stagger: float = 0.0, count: int | None = None) -> LocalCluster:
        """Start the registry and the first ``count`` nodes (default: all), ``stagger`` s apart."""
        limit_threads()
        self.url = self.registry.start()
        for index in range(len(self.datas) if count is None else count):
            self.add(index)
            if stagger:
                time.sleep(stagger)
        return self

    def add(self, index: int) -> Node:
        """Start node ``index`` (a late arrival when the others run already)."""
        if index in self.by_index:
            raise ValueError(f"node {index} was started already")
        node_config = self.config.replace(
            registry_url=self.url, name=self.names[index], node_index=index
        )
        node = Node(
            node_config,
            data=self.datas[index],
            node_id=f"n{index:03d}-{self.names[index]}",
            wrap_gossip_transport=self._wrap,
        )
        node.start()
        self.nodes.append(node)
        self.by_index[index] = node
        return node

    def leave(self, index: int) -> None:
        """Node ``index`` leaves gracefully (as on SIGTERM)."""
        self.departed.add(index)
        self.by_index[index].stop()

    def crash(self, index: int) -> None:
        """Node ``index`` stops at once without leaving (as a killed process)."""
        self.departed.add(index)
        self.by_index[index].crash()

    def live(self) -> dict[int, Node]:
        """Started nodes that have not left or crashed, by index."""
        return {i: n for i, n in sorted(self.by_index.items()) if i not in self.departed}

    def stop(self) -> None:
        """Every node still running leaves gracefully, then the registry stops."""
        for node in self.live().values():
            node.stop()
        self.registry.stop()
        self._tmp.cleanup()

    def wait_until(self, predicate: Callable[[LocalCluster], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.2)
        return predicate(self)

    def groups(self) -> dict[str, list[Node]]:
        """Live nodes by the group each believes it is in (nodes without a group left out)."""
        out: dict[str, list[Node]] = {}
        for node in self.live().values():
            if node.group_id is not None:
                out.setdefault(node.group_id, []).append(node)
        return out

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
