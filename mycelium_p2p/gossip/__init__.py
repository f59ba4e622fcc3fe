"""Gossip: SWIM membership with Lifeguard suspicion, epidemic dissemination and push-pull.

One job per module (see docs/gossip.md):

- ``messages``: every message kind as a frozen struct with its wire keys and validators.
- ``codec``: frames to and from those structs, validated at the edge, drops counted by reason.
- ``membership``: the SWIM + Lifeguard state machine (pure: ``now`` and ``rng`` injected).
- ``broadcast``: the retransmit-limited queue of updates to piggyback.
- ``delegate``: how an application rides on gossip (``Delegate``, ``NullDelegate``).
- ``core``: ``GossipCore``, the sans-I/O node: frames in, frames out, one handler per struct.
- ``transport``: the ``Transport`` protocol and ``Partition``; ``transport.zmq`` (ZeroMQ with
  CURVE) and ``transport.memory`` (``MemoryNetwork`` on a fake or a real-time clock).
- ``node``: ``SwimNode``, a core on a transport in a background thread.
- ``sim``: ``SimCluster``, thousands of cores on a fake clock; ``bench``: ``mycelium bench gossip``.

Mycelium's groups ride on it through ``mycelium_p2p.groups`` (``GroupDelegate``); the node facade
``mycelium_p2p.groups.GossipNode`` is re-exported here, loaded on first use so that this package
never imports the application at import time.

Run one node from a shell (used by the multi-process tests)::

    python -m mycelium_p2p.gossip --id a1 --seed 127.0.0.1:7946 --preset test
"""

from __future__ import annotations

from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip.broadcast import retransmit_limit
from mycelium_p2p.gossip.core import GossipCore, GossipEvent, push_pull_period
from mycelium_p2p.gossip.delegate import Delegate, NullDelegate
from mycelium_p2p.gossip.membership import MemberView, suspicion_bounds
from mycelium_p2p.gossip.node import SwimNode
from mycelium_p2p.gossip.sim import SimCluster

__all__ = [
    "Delegate",
    "GossipConfig",
    "GossipCore",
    "GossipEvent",
    "GossipNode",
    "MemberView",
    "NullDelegate",
    "SimCluster",
    "SwimNode",
    "push_pull_period",
    "retransmit_limit",
    "suspicion_bounds",
]


def __getattr__(name: str) -> Any:
    if name == "GossipNode":
        from mycelium_p2p.groups import GossipNode

        return GossipNode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
