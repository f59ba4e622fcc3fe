"""The node's state, owned by its control thread alone, and the view of gossip it decides on.

Other threads never read or write ``NodeState``: they post events. What another thread needs
from it (the heartbeat's figures, the group whose model a probe may fetch) is published as an
immutable value (``Published``) that the control thread replaces whole.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass, field

from mycelium_p2p import view
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.lifecycle import Lifecycle, Phase
from mycelium_p2p.node.ports import MemberLike, RoundSummary
from mycelium_p2p.policy import Decision

BACKOFF_MAX = 30.0  # seconds: the longest wait before trying an unreachable registry again


@dataclass(frozen=True)
class Published:
    """What the control thread shares with the other threads of the node (replaced whole).

    ``epoch`` changes with every change of group, so that an answer to a heartbeat sent before
    the change is recognised as stale.
    """

    group: str | None = None
    leading: bool = False
    epoch: int = 0
    accuracy: float | None = None
    loss: float | None = None
    round: int | None = None
    migrations: int = 0  # moves so far, as of the same step as ``group``


@dataclass
class NodeState:
    """Everything the node knows about itself, grouped by the part that keeps it."""

    id: str
    name: str
    spec: str
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    # Where the node is.
    group_id: str | None = None
    term: int = 0
    lease: str = ""  # the registry's grant of the term this node leads (with a token)
    epoch: int = 0  # bumped on every change of group
    server_address: str | None = None  # set while leading
    # Leading.
    version: int = 0  # of the group record within the term
    latest_round: RoundSummary | None = None
    unreported: RoundSummary | None = None
    published_members: tuple[str, ...] = ()
    # Following.
    following: str | None = None  # the Flower address this node trains with
    # This group's Flower servers trained with since joining it: a model from any is the group's.
    group_servers: set[str] = field(default_factory=set)
    rounds_logged: int = 0
    leader_gone_at: float | None = None
    lost_claims: int = 0
    # Choosing.
    accuracy: float | None = None  # the group's model on this node's validation split
    local_accuracy: float | None = None
    just_moved: bool = False
    looked_twice: bool = False
    found_pending: bool = False  # the last re-evaluation said found: the next must agree
    data_changed: bool = False  # its data changed since it last moved
    # The own model has not trained since the data changed: a look comes before it does, and
    # acts only on a join or a founding from a full group's model (see choice.choose).
    local_stale: bool = False
    refused: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    probes: dict[str, tuple[int, float]] = field(default_factory=dict)  # group -> (round, acc)
    migrations: int = 0
    choices: int = 0  # choices made, the first ones included
    probe_requests: int = 0  # models fetched to score them
    most_probes: int = 0  # the most models one choice fetched
    unscored_waits: int = 0  # evaluations waited, since the data changed, for a group to score
    blended: Counter[str] = field(default_factory=Counter)  # other groups' models mixed in
    # It leads a group founded from a full group's model, and at every re-evaluation since some
    # group served its data about as well (it mixes them in): alone in the group, it trains
    # nothing of its own into it (see Controller._hold_group_training).
    follows_kin: bool = False
    decisions: list[Decision] = field(default_factory=list)
    # Discovery and the registry.
    registry_backoff: float = 1.0
    failure: str | None = None

    @property
    def phase(self) -> Phase:
        return self.lifecycle.phase

    def registry_backoff_delay(self, rng: random.Random) -> float:
        """Wait before trying an unreachable registry again: doubling, jittered, capped."""
        delay = self.registry_backoff
        self.registry_backoff = min(self.registry_backoff * 2, BACKOFF_MAX)
        return delay * rng.uniform(0.5, 1.0)

    def registry_answered(self) -> None:
        """The registry answered: the next back-off starts small again."""
        self.registry_backoff = 1.0

    @property
    def leading(self) -> bool:
        return self.server_address is not None

    def publishable(self, group_record: GroupRecord | None) -> Published:
        """The values other threads may read, from this state and the group's record."""
        figures = group_record if group_record is not None and group_record.round > 0 else None
        return Published(
            group=self.group_id,
            leading=self.leading,
            epoch=self.epoch,
            accuracy=figures.accuracy if figures else None,
            loss=figures.loss if figures else None,
            round=figures.round if figures else None,
            migrations=self.migrations,
        )


class GossipView:
    """One reading of the gossip view (members and group records), taken once per step.

    Its indexes (who is alive, who says it is in which group) are computed once, on first use:
    a step asks them many times, and a member's metadata is decoded only once per reading.
    """

    def __init__(self, me: str, members: list[MemberLike], groups: dict[str, GroupRecord]):
        self.me = me
        self.members = members
        self.groups = groups

    @functools.cached_property
    def _live(self) -> set[str]:
        return view.live_ids(self.members)

    @functools.cached_property
    def _by_group(self) -> dict[str, list[str]]:
        by_group: dict[str, list[str]] = {}
        for m in self.members:
            if m.status in view.LIVE_STATUSES:
                group = m.node_meta.group
                if group:
                    by_group.setdefault(group, []).append(m.id)
        return {g: sorted(ids) for g, ids in by_group.items()}

    @property
    def alive(self) -> set[str]:
        """Ids gossip believes alive (suspects included), this node always."""
        return self._live | {self.me}

    def members_of(self, group_id: str) -> list[str]:
        """Live members whose own metadata names ``group_id``, sorted."""
        return list(self._by_group.get(group_id, ()))

    def others(self) -> set[str]:
        """Live members other than this node."""
        return self._live - {self.me}

    def occupied(self) -> set[str]:
        """Groups some live node says it is in."""
        return set(self._by_group)
