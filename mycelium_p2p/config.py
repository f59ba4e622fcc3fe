"""Configuration objects of a Mycelium peer.

``GossipConfig`` comes first and is self-contained: it tunes membership (SWIM with Lifeguard
suspicion), dissemination and the ZeroMQ transport. Presets follow HashiCorp memberlist's
``DefaultLANConfig`` / ``DefaultLocalConfig`` and add a fast one for tests.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GossipConfig:
    """Every knob of gossip, with its unit, default (the LAN preset) and trade-off.

    Parameters
    ----------
    probe_interval : float
        Seconds between two probes (one member pinged per period) (default: 1.0). Shorter detects
        failures sooner at the cost of more probe traffic (2 messages per node per period).
    probe_timeout : float
        Seconds to wait for a direct ack before asking ``indirect_checks`` others to ping-req the
        target (default: 0.5). Must be below ``probe_interval``; it should exceed the network's
        99th-percentile round trip, else loss and load turn into false suspicions.
    indirect_checks : int
        Members asked to probe a silent target on our behalf (default: 3). More hides a lossy
        path between two members better; each costs 4 messages.
    suspicion_mult : int
        Scales the suspicion timeout (default: 4). The minimum timeout is
        ``suspicion_mult * max(1, log10(max(1, N))) * probe_interval`` seconds for N live members;
        higher means fewer false deaths but slower detection.
    suspicion_max_mult : int
        The suspicion timeout starts at ``suspicion_max_mult`` times the minimum and falls to the
        minimum as independent confirmations arrive (default: 6), Lifeguard style.
    awareness_max : int
        Ceiling of the local health score (default: 8), Lifeguard's "local health multiplier":
        each failed probe or refutation of our own suspicion raises the score by one, each
        successful probe lowers it, and probe interval and timeout are stretched by
        ``1 + score``. A node starved of CPU or network then waits longer before accusing
        others, instead of spreading false suspicions; 0 turns it off.
    retransmit_mult : int
        Each update is sent ``retransmit_mult * ceil(log10(N + 1))`` times (default: 4). Higher
        raises the chance every node hears it, at proportional bandwidth.
    gossip_interval : float
        Seconds between gossip ticks (default: 0.2). Each tick sends pending updates to
        ``fanout`` random live peers; shorter spreads updates faster, with more, smaller frames.
    fanout : int
        Peers per gossip tick (default: 3). Spread time falls roughly as ``log(N)/log(fanout)``.
    push_pull_interval : float
        Seconds between full-state exchanges with one random peer (default: 30.0), scaled up by
        ``ceil(log2(N) - log2(32)) + 1`` above 32 members. Heals what gossip missed and
        partitions; each exchange costs the full state both ways.
    dead_ttl : float
        Seconds a dead or left member is remembered (default: 30.0), so that stale gossip cannot
        resurrect it; must outlast an update's retransmissions.
    tombstone_ttl : float
        Seconds a dissolved group's record is kept as a tombstone (default: 300.0).
    max_frame_bytes : int
        Cap on a gossip frame in bytes (default: 60_000). Bigger batches are split; bigger
        incoming frames are dropped as ``oversize``.
    max_model_bytes : int
        Cap on a model response frame in bytes (default: 64 MiB); also the socket's
        ``ZMQ_MAXMSGSIZE`` (plus a little envelope).
    max_meta_bytes : int
        Cap on a member's encoded metadata in bytes (default: 512).
    max_peers : int
        Outbound DEALER connections kept open, least recently used closed first (default: 64).
    peer_idle : float
        Seconds after which an unused outbound connection is closed (default: 60.0).
    send_hwm : int
        ZeroMQ send high-water mark per peer, in messages (default: 1000); beyond it frames are
        dropped (never blocking the gossip thread) and counted.
    recv_hwm : int
        ZeroMQ receive high-water mark, in messages (default: 10_000).
    """

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_mult: int = 6
    awareness_max: int = 8
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    fanout: int = 3
    push_pull_interval: float = 30.0
    dead_ttl: float = 30.0
    tombstone_ttl: float = 300.0
    max_frame_bytes: int = 60_000
    max_model_bytes: int = 64 * 1024 * 1024
    max_meta_bytes: int = 512
    max_peers: int = 64
    peer_idle: float = 60.0
    send_hwm: int = 1000
    recv_hwm: int = 10_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"GossipConfig.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"GossipConfig.{f.name} must be positive, got {value!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("GossipConfig.probe_timeout must be below probe_interval")
        if self.suspicion_max_mult < 1:
            raise ValueError("GossipConfig.suspicion_max_mult must be at least 1")
        if self.max_frame_bytes < 1024:
            raise ValueError("GossipConfig.max_frame_bytes must be at least 1024")
        if self.max_model_bytes < self.max_frame_bytes:
            raise ValueError("GossipConfig.max_model_bytes must be at least max_frame_bytes")
        if self.max_meta_bytes * 4 > self.max_frame_bytes:
            raise ValueError("GossipConfig.max_meta_bytes must be at most max_frame_bytes / 4")

    @classmethod
    def lan(cls) -> GossipConfig:
        """Memberlist's LAN values: probe 1 s (timeout 0.5 s), gossip 0.2 s to 3 peers."""
        return cls()

    @classmethod
    def local(cls) -> GossipConfig:
        """One machine (loopback): shorter timeouts, fewer indirect checks and retransmits."""
        return cls(
            probe_interval=1.0,
            probe_timeout=0.2,
            indirect_checks=1,
            suspicion_mult=3,
            retransmit_mult=2,
            gossip_interval=0.1,
            push_pull_interval=15.0,
            dead_ttl=15.0,
        )

    @classmethod
    def test(cls) -> GossipConfig:
        """Fast values for tests: probe 0.2 s, gossip 0.05 s, push-pull 2 s."""
        # Tests run many nodes and their training in one process on two shared cores: an ack
        # can wait for the GIL, so the probe timeout leaves room for that.
        return cls(
            probe_interval=0.5,
            probe_timeout=0.3,
            indirect_checks=2,
            suspicion_mult=3,
            suspicion_max_mult=4,
            retransmit_mult=3,
            gossip_interval=0.05,
            push_pull_interval=2.0,
            dead_ttl=10.0,
            tombstone_ttl=30.0,
            peer_idle=10.0,
        )

    def replace(self, **changes: float) -> GossipConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
