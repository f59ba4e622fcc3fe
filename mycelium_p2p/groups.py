"""Learning groups on gossip: records, the versioned table, the delegate and the node facade.

A record is ordered by ``(term, version)``; the table keeps, per group id, the strictly newest
record it has seen, so every node converges to the same table whatever order or how many times
records arrive (last-writer-wins on a total order). ``GroupRecord`` and ``GroupTable`` are pure
(no I/O, clock passed in).

``GroupDelegate`` is how groups ride on gossip (``mycelium_p2p.gossip.delegate``): the table with
its tombstones, the registry URL learned by push-pull and the model provider. Records travel as
application items (``{"t": "g", ...}`` in updates lists, ``g`` in push-pull states, the registry
URL as the push-pull header's ``url``).

``GossipNode`` is what nodes and observers (viewer, ``status --peer``) use: a ``SwimNode`` with a
``GroupDelegate``, on ZeroMQ unless given a transport.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mycelium_p2p import view
from mycelium_p2p.config import GossipConfig
from mycelium_p2p.gossip.core import GossipEvent
from mycelium_p2p.gossip.delegate import NullDelegate
from mycelium_p2p.gossip.membership import MemberView
from mycelium_p2p.gossip.messages import MAX_ID_LEN, check_id
from mycelium_p2p.gossip.node import TICKET_KEY, SwimNode
from mycelium_p2p.gossip.transport import Transport
from mycelium_p2p.gossip.transport.zmq import ZmqTransport
from mycelium_p2p.identity import IdentityError, NodeIdentity, Trust, from_text, to_text
from mycelium_p2p.limits import MAX_COUNTER, MAX_LOSS
from mycelium_p2p.security import keys_for

log = logging.getLogger(__name__)

MAX_TEXT_LEN = 256
MAX_URL_LEN = 2048
MAX_MEMBERS = 4096
#: Longest lease text a record carries (a signed lease is at most 1,024 bytes, base64).
MAX_LEASE_TEXT = 1400
#: Longest revocation list text gossip carries (base64 of at most 16 KiB signed).
MAX_REVOCATION_TEXT = 16 * 1024 * 4 // 3 + 4


@dataclass(frozen=True, slots=True)
class RevocationItem:
    """The registry's signed revocation list as gossip carries it (``crl``: base64 text)."""

    crl: str

    def to_dict(self) -> dict[str, Any]:
        return {"crl": self.crl}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RevocationItem:
        unknown = set(d) - {"crl", "t"}
        if unknown:
            raise ValueError(f"unknown revocation list fields {sorted(unknown)!r}")
        return cls(_text(d.get("crl"), "crl", MAX_REVOCATION_TEXT, empty=False))


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """The latest known state of one learning group (see docs/architecture.md).

    Parameters
    ----------
    id : str
        Group id (``g-`` + 8 hex by convention).
    name : str
        Display name (default: "").
    leader : str | None
        Node id of the leader (default: None).
    leader_address : str
        Leader's gossip address ``host:port``, for model probes (default: "").
    flower_address : str
        Leader's Flower server address (default: "").
    members : tuple[str, ...]
        Node ids of the members; stored sorted (default: ()).
    model : str
        Model spec ``NAME:SHAPE:CLASSES`` (default: "").
    capacity : int
        Maximum number of members (default: 0).
    accuracy, loss : float
        Latest federated evaluation (default: 0.0).
    round : int
        Rounds completed (default: 0).
    examples : int
        Examples behind the latest evaluation (default: 0).
    term : int
        Leadership term from the registry (default: 0).
    version : int
        Leader's counter within a term (default: 0).
    dissolved : bool
        A tombstone: the group is gone (default: False).
    updated_at : float
        Wall-clock seconds when published; informational only (default: 0.0).
    created_at : float
        Wall-clock seconds when the group was founded; breaks ties between equally large
        groups in the merge rule (older wins) (default: 0.0).
    lease : str
        With a token: the registry's signed grant of ``term`` to ``leader`` at
        ``flower_address`` (``identity.Lease``, base64); a node with an identity accepts a
        record only with a valid one (default: "").
    """

    id: str
    name: str = ""
    leader: str | None = None
    leader_address: str = ""
    flower_address: str = ""
    members: tuple[str, ...] = field(default_factory=tuple)
    model: str = ""
    capacity: int = 0
    accuracy: float = 0.0
    loss: float = 0.0
    round: int = 0
    examples: int = 0
    term: int = 0
    version: int = 0
    dissolved: bool = False
    updated_at: float = 0.0
    created_at: float = 0.0
    lease: str = ""

    def __post_init__(self) -> None:
        # Sorted members make equal records compare equal whatever order the leader used.
        object.__setattr__(self, "members", tuple(sorted(self.members)))

    @property
    def order(self) -> tuple[int, int]:
        """The ``(term, version)`` pair records are ordered by."""
        return (self.term, self.version)

    def newer_than(self, other: GroupRecord | None) -> bool:
        """True if this record strictly supersedes ``other`` (any record beats None)."""
        return other is None or self.order > other.order

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the wire: every field in declaration order, members as a list (no
        ``lease`` when there is none)."""
        d = {name: getattr(self, name) for name in _FIELD_ORDER}
        d["members"] = list(self.members)
        if not self.lease:  # open networks: the same bytes as before leases existed
            del d["lease"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> GroupRecord:
        """Validate a decoded dict into a record.

        Raises
        ------
        ValueError
            If a field is missing, unknown, of the wrong type or out of range.
        """
        if not isinstance(d, dict):
            raise ValueError("group record must be a map")
        unknown = set(d) - _FIELDS - {"t"}
        if unknown:
            raise ValueError(f"unknown group record fields {sorted(unknown)!r}")
        leader = d.get("leader")
        if leader is not None:
            leader = _text(leader, "leader", MAX_ID_LEN)
        members = d.get("members", [])
        if not isinstance(members, list | tuple) or len(members) > MAX_MEMBERS:
            raise ValueError("members must be a list of at most 4096 ids")
        return cls(
            id=_text(d.get("id"), "id", MAX_ID_LEN, empty=False),
            name=_text(d.get("name", ""), "name", MAX_TEXT_LEN),
            leader=leader,
            leader_address=_text(d.get("leader_address", ""), "leader_address", MAX_TEXT_LEN),
            flower_address=_text(d.get("flower_address", ""), "flower_address", MAX_TEXT_LEN),
            members=tuple(_text(m, "member", MAX_ID_LEN, empty=False) for m in members),
            model=_text(d.get("model", ""), "model", MAX_TEXT_LEN),
            capacity=_count(d.get("capacity", 0), "capacity"),
            accuracy=_real(d.get("accuracy", 0.0), "accuracy", 1.0),
            loss=_real(d.get("loss", 0.0), "loss", MAX_LOSS),
            round=_count(d.get("round", 0), "round"),
            examples=_count(d.get("examples", 0), "examples"),
            # A term or version at the bound could never be superseded (a claim needs term + 1,
            # a leader's next record version + 1): such a record would freeze the group.
            term=_count(d.get("term", 0), "term", MAX_COUNTER - 1),
            version=_count(d.get("version", 0), "version", MAX_COUNTER - 1),
            dissolved=_flag(d.get("dissolved", False), "dissolved"),
            updated_at=_time(d.get("updated_at", 0.0), "updated_at"),
            created_at=_time(d.get("created_at", 0.0), "created_at"),
            lease=_text(d.get("lease", ""), "lease", MAX_LEASE_TEXT),
        )


_FIELD_ORDER = tuple(GroupRecord.__dataclass_fields__)
_FIELDS = set(_FIELD_ORDER)


def _text(v: Any, name: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(v, str) or len(v) > limit or (not empty and not v):
        raise ValueError(f"{name} must be a string of at most {limit} characters")
    return v


def _count(v: Any, name: str, limit: int = MAX_COUNTER) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
        raise ValueError(f"{name} must be an integer in 0..{limit}")
    return v


def _real(v: Any, name: str, limit: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= limit:
        raise ValueError(f"{name} must be a number in 0..{limit:g}")
    return float(v)


def _time(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number")
    return float(v)


def _flag(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be a boolean")
    return v


class GroupTable:
    """Per group id, the strictly newest ``GroupRecord`` seen (LWW on ``(term, version)``).

    Parameters
    ----------
    tombstone_ttl : float
        Seconds a dissolved record is kept after it was last applied.
    """

    def __init__(self, tombstone_ttl: float) -> None:
        self.tombstone_ttl = tombstone_ttl
        self._records: dict[str, GroupRecord] = {}
        self._applied_at: dict[str, float] = {}
        self._max_version: dict[tuple[str, int], int] = {}

    def apply(self, record: GroupRecord, now: float) -> bool:
        """Store ``record`` if strictly newer than the one held; return whether it was."""
        key = (record.id, record.term)
        self._max_version[key] = max(self._max_version.get(key, -1), record.version)
        if not record.newer_than(self._records.get(record.id)):
            return False
        self._records[record.id] = record
        self._applied_at[record.id] = now
        return True

    def get(self, group_id: str) -> GroupRecord | None:
        """The held record for ``group_id`` (tombstones included)."""
        return self._records.get(group_id)

    def live(self) -> dict[str, GroupRecord]:
        """Records of groups that are not dissolved."""
        return {k: r for k, r in self._records.items() if not r.dissolved}

    def all(self) -> list[GroupRecord]:
        """Every held record, tombstones included (for push-pull)."""
        return list(self._records.values())

    def next_version(self, group_id: str, term: int) -> int:
        """One more than the highest version seen for ``(group_id, term)`` (0 if none)."""
        return self._max_version.get((group_id, term), -1) + 1

    def expire(self, now: float) -> list[str]:
        """Drop tombstones older than ``tombstone_ttl``; return their ids."""
        gone = [
            gid
            for gid, r in self._records.items()
            if r.dissolved and now - self._applied_at[gid] >= self.tombstone_ttl
        ]
        for gid in gone:
            del self._records[gid]
            del self._applied_at[gid]
            for key in [k for k in self._max_version if k[0] == gid]:
                del self._max_version[key]
        return gone

    def __len__(self) -> int:
        return len(self._records)


# ============================================================================ on gossip

ModelProvider = Callable[[str], tuple[int, bytes] | None]


class GroupDelegate(NullDelegate):
    """Groups riding on gossip: the table, the registry URL and the model provider.

    Runs on the gossip thread only (the node facade queues every call there).

    Parameters
    ----------
    tombstone_ttl : float
        Seconds a dissolved record is kept (``GossipConfig.tombstone_ttl``).
    registry_url : str | None
        The registry's URL if known, else learned from the first push-pull that carries one
        (default: None).
    trust : callable | None
        Returns what the node believes (``identity.Trust``) or None; given, a record is applied
        only if its lease verifies and names its group, term, leader and Flower address
        (refused ones are counted in ``refused``) (default: None: every record is applied).
    """

    def __init__(
        self,
        tombstone_ttl: float,
        registry_url: str | None = None,
        trust: Callable[[], Trust | None] | None = None,
    ) -> None:
        super().__init__()
        self.table = GroupTable(tombstone_ttl)
        self.registry_url = registry_url
        self.model_provider: ModelProvider | None = None
        self.trust = trust
        self.refused = 0

    def leased(self, record: GroupRecord) -> bool:
        """Whether ``record`` may be applied: always without ``trust``, else only with a lease
        the CA signed for exactly its group, term, leader and Flower address."""
        if self.trust is None:
            return True
        trust = self.trust()
        if trust is None or not record.lease or record.leader is None:
            return False
        try:
            lease = trust.lease(from_text(record.lease, MAX_LEASE_TEXT))
        except IdentityError:
            return False
        return lease.names(record.id, record.term, record.leader, record.flower_address)

    def parse_item(self, raw: dict[str, Any]) -> GroupRecord | RevocationItem:
        """A group record (or the signed revocation list) off the wire (ValueError if any
        field is invalid).

        Most records gossip delivers are ones this node holds already (every news is sent
        several times): a record no newer than the held one is answered with the held one,
        unchecked, since applying it would change nothing anyway.
        """
        if "crl" in raw:
            return RevocationItem.from_dict(raw)
        held = self.table.get(raw.get("id")) if isinstance(raw.get("id"), str) else None
        term, version = raw.get("term"), raw.get("version")
        if (
            held is not None
            and type(term) is int
            and type(version) is int
            and (term, version) <= held.order
        ):
            return held
        return GroupRecord.from_dict(raw)

    def parse_header(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The push-pull header: the registry's ``url`` (a string of at most 2,048 characters)."""
        url = raw.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > MAX_URL_LEN):
            raise ValueError("registry url must be a string")
        return {"url": url}

    def notify(self, item: Any, now: float) -> bool:
        """A peer's record: applied and gossiped on if strictly newer (a revocation list:
        installed and gossiped on if it verifies and is newer)."""
        if isinstance(item, RevocationItem):
            return self.revocations(item)
        return self.publish(item, now)

    def revocations(self, item: RevocationItem) -> bool:
        """Install the signed revocation list ``item`` if it verifies and is newer than the one
        held; then gossip it on and raise ``revocations`` (its ids). True if it was news."""
        trust = None if self.trust is None else self.trust()
        if trust is None:
            return False
        try:
            if not trust.install(from_text(item.crl, MAX_REVOCATION_TEXT)):
                return False
        except IdentityError:
            self.refused += 1
            return False
        self.broadcast(("crl",), item)
        self.emit("revocations", sorted(trust.revocations.ids))
        return True

    def held_revocations(self) -> RevocationItem | None:
        """The revocation list this node holds, as an item (None: none, or no identity)."""
        trust = None if self.trust is None else self.trust()
        if trust is None or not trust.revocations.raw:
            return None
        return RevocationItem(to_text(trust.revocations.raw))

    def publish(self, record: GroupRecord, now: float) -> bool:
        """Apply ``record``; if strictly newer, gossip it and raise ``group_updated`` (or
        ``group_dissolved``). True if it was."""
        if not isinstance(record, GroupRecord):
            raise ValueError("a group item must be a GroupRecord")
        held = self.table.get(record.id)
        if record.newer_than(held) and not self.leased(record):
            self.refused += 1
            return False
        if not self.table.apply(record, now):
            return False
        self.broadcast(("g", record.id), record)
        self.emit("group_dissolved" if record.dissolved else "group_updated", record)
        return True

    def local_state(self) -> tuple[dict[str, Any], list[Any]]:
        held = self.held_revocations()
        items: list[Any] = self.table.all()
        return {"url": self.registry_url}, items if held is None else [held, *items]

    def merge_remote_state(self, header: dict[str, Any], items: list[Any], now: float) -> None:
        for item in items:
            if isinstance(item, RevocationItem):
                self.revocations(item)
            else:
                self.publish(item, now)
        if self.registry_url is None and header.get("url"):
            self.registry_url = header["url"]

    def answer_model(self, group_id: str) -> tuple[int, bytes] | None:
        provider = self.model_provider
        return None if provider is None else provider(group_id)

    def tick(self, now: float) -> None:
        self.table.expire(now)


class GossipNode:
    """A Mycelium peer's gossip: a ``SwimNode`` carrying groups (``GroupDelegate``).

    Thread-safe; ``subscribe`` callbacks run on the gossip thread (keep them quick; they may call
    this node's methods except ``request_model``).

    Parameters
    ----------
    node_id : str
        This node's id.
    config : GossipConfig
        Gossip settings.
    host : str
        Interface to bind (default: "127.0.0.1").
    port : int
        Port to bind, 0 for any free one (default: 0).
    advertise_host : str | None
        Host peers should use to reach us (default: ``host``).
    meta : dict | None
        Initial member metadata, ``NodeMeta.to_map()`` or a part of it (default: None).
    observer : bool
        Receive everything, own no group: ``role`` is ``observer``, ``group`` empty
        (default: False).
    secret : str | bytes | None
        A shared secret: all gossip over CURVE with one key pair derived from it (standalone
        gossip; ignored with an ``identity``) (default: None).
    identity : NodeIdentity | None
        The node's own identity: its ROUTER serves with its own CURVE key and admits only peers
        with a valid ticket from the network's CA; silent until the identity is enrolled
        (default: None).
    registry_url : str | None
        Known registry URL, else learned by push-pull (default: None).
    rng : random.Random | None
        Random source (default: a new ``random.Random()``).
    transport : Transport | None
        The endpoint to gossip on (default: None, a ``ZmqTransport`` bound at ``start`` from
        ``host``, ``port``, ``advertise_host`` and ``secret``).
    wrap_transport : Callable[[Transport], Transport] | None
        Applied to the transport at ``start`` (e.g. ``Partition.wrap`` in tests) (default: None).
    """

    def __init__(
        self,
        node_id: str,
        config: GossipConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        meta: dict[str, Any] | None = None,
        observer: bool = False,
        secret: str | bytes | None = None,
        registry_url: str | None = None,
        *,
        identity: NodeIdentity | None = None,
        rng: random.Random | None = None,
        transport: Transport | None = None,
        wrap_transport: Callable[[Transport], Transport] | None = None,
    ) -> None:
        self.node_id = check_id(node_id, "node id")
        self.config = config
        self.host, self.port, self.advertise_host = host, port, advertise_host
        self.observer = observer
        m = dict(meta or {})
        m["role"] = "observer" if observer else m.get("role", "node")
        if observer:
            m["group"] = ""
        self._meta = m
        self.identity = identity
        self._keys = keys_for(secret) if transport is None and identity is None else None
        if transport is None and identity is None and self._keys is None and not observer:
            # An observer owns nothing and only reads: no warning for it.
            log.warning("gossip is open (no secret): any peer that can reach this port can join")
        if identity is not None and identity.ticket is not None:
            m[TICKET_KEY] = identity.ticket.text()
        self._transport = transport
        self._wrap = wrap_transport
        self._rng = rng
        self.delegate = GroupDelegate(
            config.tombstone_ttl,
            registry_url,
            trust=None if identity is None else (lambda: identity.trust),
        )
        self.address: str | None = transport.address if transport is not None else None
        self._swim: SwimNode | None = None
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[GossipEvent], None]] = []

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Bind (unless given a transport) and start the gossip thread; ``address`` is set."""
        if self._swim is not None:
            raise RuntimeError("GossipNode already started")
        transport: Transport = self._transport or ZmqTransport(
            self.config,
            self.host,
            self.port,
            self.advertise_host,
            self._keys,
            identity=self.identity,
        )
        if self._wrap is not None:
            transport = self._wrap(transport)
        swim = SwimNode(
            self.node_id, self.config, transport, self.delegate, meta=self._meta, rng=self._rng
        )
        swim.subscribe(self._fan_out)
        inner: Any = transport
        while hasattr(inner, "inner"):  # a wrapper (a partition in tests)
            inner = inner.inner
        if hasattr(inner, "introduction"):
            inner.introduction = lambda: self.delegate.registry_url
        self.address = swim.address
        self._swim = swim
        swim.start()

    def join(self, seeds: list[str], timeout: float) -> bool:
        """Push-pull with the first seed that answers; True once one did within ``timeout``.

        With an identity, each seed is first asked for its ticket (its introduction listener):
        a seed whose ticket does not verify is never spoken to.
        """
        if self.identity is not None:
            share = timeout / max(1, len(seeds))
            for seed in seeds:
                self.introduce(seed, min(share, 2.0))
        return self._node().join(seeds, timeout)

    def introduce(self, address: str, timeout: float) -> str | None:
        """Ask the node at ``address`` for the registry's URL and (enrolled) its ticket, whose
        key is then used to reach it; the URL it named, or None (no answer, or no identity)."""
        swim = self._swim
        introduce = getattr(swim.transport, "introduce", None) if swim is not None else None
        if introduce is None:
            return None
        answer = introduce(address, timeout)
        if answer is None:
            return None
        trust = None if self.identity is None else self.identity.trust
        if answer.ticket is not None and trust is not None:
            with contextlib.suppress(IdentityError):
                ticket = trust.ticket(answer.ticket)
                swim.transport.learn(ticket.node_id, address, answer.ticket)
        if answer.url and self.delegate.registry_url is None:
            self.delegate.registry_url = answer.url
        return answer.url

    def set_ticket(self) -> None:
        """Gossip this node's (new) ticket, and reconnect to peers with it."""
        ticket = None if self.identity is None else self.identity.ticket
        swim = self._swim
        if ticket is None or swim is None:
            return
        renew = getattr(swim.transport, "renew", None)
        if renew is not None:
            swim.call(lambda core, now: renew())
        self.update_meta(**{TICKET_KEY: ticket.text()})

    def leave(self, timeout: float = 1.0) -> None:
        """Announce a graceful leave, let the news go out (bounded by ``timeout``), stop."""
        if self._swim is not None:
            self._swim.leave(timeout)

    def stop(self) -> None:
        """Stop the thread and close the transport (idempotent)."""
        if self._swim is not None:
            self._swim.stop()

    # ------------------------------------------------------------------ members

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into own metadata, bump incarnation, gossip it (ValueError if bad)."""
        if self.observer and fields.get("group"):
            raise ValueError("an observer never belongs to a group")
        if self.observer and fields.get("role", "observer") != "observer":
            raise ValueError("an observer keeps role=observer")
        self._node().update_meta(**fields)

    def members(self) -> list[MemberView]:
        """Every known member (self first): id, address, status, incarnation, meta."""
        return self._node().members()

    def group_members(self, group_id: str) -> list[str]:
        """Live non-observer member ids whose ``NodeMeta.group`` is ``group_id``, sorted."""
        return sorted(
            m.id
            for m in self.members()
            if m.status in view.LIVE_STATUSES
            and m.node_meta.group == group_id
            and m.node_meta.role != "observer"
        )

    # ------------------------------------------------------------------ groups

    def groups(self) -> dict[str, GroupRecord]:
        """Live (non-dissolved) group records by id."""
        return self._node().call(lambda core, now: self.delegate.table.live())

    def next_version(self, group_id: str, term: int) -> int:
        """Version to publish next for ``(group_id, term)``: highest seen + 1."""
        return self._node().call(lambda core, now: self.delegate.table.next_version(group_id, term))

    def publish_group(self, record: GroupRecord) -> bool:
        """Gossip our group's record; True if it was strictly newer (and we lead the group)."""
        if self.observer or record.leader != self.node_id:
            return False
        return self._node().call(lambda core, now: self.delegate.publish(record, now))

    @property
    def registry_url(self) -> str | None:
        """Configured, or learned from a peer by push-pull."""
        return self.delegate.registry_url

    # ------------------------------------------------------------------ models

    def set_model_provider(self, fn: ModelProvider) -> None:
        """Answer MODEL_REQUEST{group_id} with ``fn(group_id) -> (round, payload) | None``.

        ``fn`` runs on the gossip thread: keep it fast (serialize a cached model).
        """
        self._node().call(lambda core, now: setattr(self.delegate, "model_provider", fn))

    def request_model(
        self, address: str, group_id: str, timeout: float
    ) -> tuple[int, bytes] | None:
        """Ask ``address`` for its model of ``group_id``; ``(round, payload)`` or None.

        Blocks the calling thread only (never call it from a subscriber callback).
        """
        swim = self._swim
        return None if swim is None else swim.request_model(address, group_id, timeout)

    # ------------------------------------------------------------------ the rest

    def subscribe(self, callback: Callable[[GossipEvent], None]) -> None:
        """Call ``callback(event)`` on the gossip thread for every event (keep it quick)."""
        with self._lock:
            self._subscribers.append(callback)

    def stats(self) -> dict[str, Any]:
        """Gossip counters (see ``GossipCore.stats``), ``transport`` counters and ``groups``."""
        s = self._node().stats()
        s["groups"] = self._node().call(lambda core, now: len(self.delegate.table.live()))
        s["records_refused"] = self.delegate.refused
        return s

    @property
    def running(self) -> bool:
        """True while the gossip thread runs (False before ``start`` and once it ended)."""
        return self._swim is not None and self._swim.running

    @property
    def failure(self) -> str | None:
        """Why the gossip thread ended on its own, if it did (None while running or stopped)."""
        return None if self._swim is None else self._swim.failure

    def _node(self) -> SwimNode:
        if self._swim is None:
            raise RuntimeError("GossipNode not started")
        return self._swim

    def install_revocations(self, signed: str) -> bool:
        """Take the registry's signed revocation list (base64) and gossip it if it is newer;
        True if it was (every node then refuses the revoked ids' frames and sessions)."""
        item = RevocationItem(signed)
        return bool(self._node().call(lambda core, now: self.delegate.revocations(item)))

    def _fan_out(self, event: GossipEvent) -> None:
        if event.kind == "revocations" and isinstance(event.item, list):
            # Revoked members cannot refute (their frames are refused): declare them dead.
            ids = [i for i in event.item if i != self.node_id]
            self._node().call(lambda core, now: core.declare_dead(ids, now))
        with self._lock:
            subscribers = list(self._subscribers)
        for cb in subscribers:
            try:
                cb(event)
            except Exception:
                log.exception("gossip subscriber failed on %s", event.kind)
