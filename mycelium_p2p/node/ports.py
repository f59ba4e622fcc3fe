"""The node's ports: everything its logic asks of the world, as typed protocols.

The control logic (``controller.py`` and ``parts/``) speaks only to these. The daemon plugs in
the real adapters (ZeroMQ gossip, the HTTP registry, Flower); the in-memory network plugs in a
gossip core on a memory transport, the registry store on an in-memory database and a fake
learner, all on one fake clock. Calls may block (a registry request, a model probe, a round of
local training); none may call back into the control logic: results of other threads come back
as events (``events.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.meta import NodeMeta

#: Seconds on some monotonic clock (wall clock in the daemon, simulated in memory).
Clock = Callable[[], float]


class MemberLike(Protocol):
    """A gossip member as the node reads it (``gossip.membership.MemberView`` is one)."""

    id: str
    address: str
    status: str

    @property
    def node_meta(self) -> NodeMeta: ...


class GossipPort(Protocol):
    """The node's view of, and voice in, the gossip network."""

    @property
    def address(self) -> str:
        """This node's advertised gossip address."""
        ...

    @property
    def registry_url(self) -> str | None:
        """The registry's URL as configured or learned from a peer."""
        ...

    def members(self) -> list[MemberLike]:
        """Every known member, this node first."""
        ...

    def groups(self) -> dict[str, GroupRecord]:
        """Live (not dissolved) group records by id."""
        ...

    def set_meta(self, meta: NodeMeta) -> None:
        """Announce this node's own state."""
        ...

    def publish_group(self, record: GroupRecord) -> bool:
        """Gossip the record of a group this node leads."""
        ...

    def join(self, seeds: list[str], timeout: float) -> bool:
        """Exchange state with the first seed that answers (0 timeout: do not wait)."""
        ...

    def request_model(
        self, address: str, group_id: str, timeout: float
    ) -> tuple[int, bytes] | None:
        """The latest model of ``group_id`` from its leader at ``address``: (round, payload)."""
        ...

    def leave(self, timeout: float) -> None:
        """Announce a graceful leave and stop."""
        ...


@dataclass(frozen=True)
class RoundSummary:
    """One finished round of the group this node leads (figures weighted by examples)."""

    round: int
    accuracy: float
    loss: float
    examples: int
    clients: int


class ServerHandle(Protocol):
    """A Flower server of a group this node leads (or is about to)."""

    @property
    def address(self) -> str:
        """Where members reach it (``host:port``)."""
        ...

    def payload(self) -> tuple[int, bytes]:
        """The latest global model, serialized, with its round (thread-safe)."""
        ...

    def running(self) -> bool:
        """Whether its thread runs."""
        ...

    def stop(self) -> None:
        """Stop serving (members are disconnected)."""
        ...


class LearningPort(Protocol):
    """What the node learns and how it trains with a group (a task plus Flower)."""

    @property
    def spec(self) -> str:
        """The model spec; only nodes with equal specs share a group."""
        ...

    @property
    def val_size(self) -> int:
        """Validation samples behind every accuracy this node measures."""
        ...

    def summary(self) -> dict[str, Any]:
        """What the node tells the registry about its data (no data itself)."""
        ...

    def sizes(self) -> dict[str, int]:
        """``train`` and ``val`` example counts (and ``probe_ms``, milliseconds per probe, when
        measured), announced in gossip metadata."""
        ...

    def train_local(self) -> float:
        """Train the node's own model one more step (the first after `switch_data`: as many as
        it takes to catch up with the new data); its accuracy on the validation split."""
        ...

    def switch_data(self, data: Any) -> None:
        """Train, validate and test on ``data`` from now on (same model spec); the switch
        trains nothing: the own model catches up at the next `train_local`."""
        ...

    def probe_size(self, *, with_train: bool = False) -> int:
        """Samples behind a score ``with_train``: the validation split, and after a data switch
        (``switch_data``) training samples too, which no group has trained on yet."""
        ...

    def score(self, payload: bytes, *, with_train: bool = False) -> float:
        """Accuracy of a serialized model on the validation split (``with_train``: see
        `probe_size`); ValueError if it does not fit this node's spec or is not finite."""
        ...

    def group_accuracy(self, *, with_train: bool = False) -> float | None:
        """Accuracy of the current group's latest model on the validation split (``with_train``:
        see `probe_size`); None: no model yet."""
        ...

    def adopt(self, payload: bytes, source: str, server_round: int) -> None:
        """Hold a serialized group model fetched by a probe as the last group model received,
        from the Flower server at ``source`` and of its ``server_round``: a member that joins
        holds its new group's model before that group's first round reaches it. ValueError
        when it does not fit this node's spec or is not finite."""
        ...

    def blend(self, shared: list[tuple[bytes, float]]) -> None:
        """Mix serialized models of other groups into the group this node leads, before its
        next round: each with its weight (positive, summing to 1 at most). ValueError when this
        node leads no group or a model does not fit."""
        ...

    def start_server(self, start_round: int, *, from_group: bool) -> ServerHandle:
        """Start a Flower server for a group, seeded with the last group model this node holds
        when ``from_group`` (a takeover), else with its local model (a founding); its results
        come back as ``RoundDone`` events."""
        ...

    def follow(self, address: str) -> None:
        """Train as a member of the group whose server is at ``address``."""
        ...

    def unfollow(self) -> None:
        """Leave the current group's server."""
        ...

    def hold_group_training(self, hold: bool) -> None:
        """While ``hold``, the node's part of its group's rounds returns the group's model
        unchanged (its data changed and it has not chosen again)."""
        ...

    def last_round(self) -> int:
        """The round of the last group model this node received (0: none)."""
        ...

    def model_source(self) -> str | None:
        """Address of the Flower server the last group model this node received came from
        (None: none received)."""
        ...

    def dead_threads(self) -> list[str]:
        """Names of the learning threads that should run and do not (empty when healthy)."""
        ...

    def close(self) -> None:
        """Stop every thread of the learner."""
        ...


class Group(Protocol):
    """A group as the registry answers it."""

    id: str
    leader: str | None
    term: int
    status: str


class RegistryNode(Protocol):
    """A node as the registry answers it."""

    id: str
    group: str | None


class HeartbeatAnswer(RegistryNode, Protocol):
    """A heartbeat's answer: the node, and a few live peers' gossip addresses."""

    peers: list[str]


class RegistryPort(Protocol):
    """The registry, typed; raises ``RegistryError`` (an answer refused) and
    ``RegistryUnavailable`` (no answer)."""

    def register(self, *, id: str, name: str, gossip_address: str, flower_address: str | None,
                 model: str, data: dict[str, Any]) -> RegistryNode: ...  # fmt: skip

    def heartbeat(self, node_id: str, *, accuracy: float | None, loss: float | None,
                  round: int | None) -> HeartbeatAnswer: ...  # fmt: skip

    def deregister(self, node_id: str) -> RegistryNode: ...

    def peers(self, limit: int) -> list[str]: ...

    def group(self, group_id: str) -> Group: ...

    def create_group(self, *, id: str, name: str, leader: str, flower_address: str, model: str,
                     capacity: int, reason: str | None) -> Group: ...  # fmt: skip

    def join_group(self, *, node_id: str, group_id: str, reason: str | None) -> Group: ...

    def leave_group(self, *, node_id: str) -> RegistryNode: ...

    def claim_leadership(self, group_id: str, *, node_id: str, term: int,
                         flower_address: str) -> Group: ...  # fmt: skip

    def report_performance(self, group_id: str, *, node_id: str, term: int, accuracy: float,
                           loss: float, round: int, examples: int) -> Group: ...  # fmt: skip

    def close(self) -> None: ...
