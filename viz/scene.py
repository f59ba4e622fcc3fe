"""The viewer's scene model: what the network looks like and where everything is drawn.

Pure: no pygame, no I/O, no clock of its own. A data source produces :class:`NetworkView`
snapshots; :class:`Scene` turns successive snapshots into eased positions, fades, stable colours,
accuracy histories, counters and an event ticker. Positions live in the unit square
``[0, 1] x [0, 1]``; the renderer maps them into its topology pane.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from dataclasses import dataclass, field

NODE_STATUSES = ("alive", "suspect", "dead", "left", "gone")
_FADING_STATUSES = frozenset({"dead", "left", "gone"})

#: Distinct, readable-on-dark colours; a group keeps its colour for the life of the viewer.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 97, 89),
    (86, 180, 233),
    (240, 200, 70),
    (110, 205, 120),
    (204, 121, 200),
    (255, 150, 60),
    (80, 215, 200),
    (170, 150, 255),
    (250, 130, 170),
    (180, 210, 90),
    (120, 160, 200),
    (220, 170, 120),
)
UNGROUPED_COLOUR: tuple[int, int, int] = (150, 150, 160)

POSITION_TAU = 0.45  # seconds: time constant of position easing (95% of the way in ~1.35 s)
FADE_SECONDS = 1.5  # seconds for a full fade in or out
SNAP_DISTANCE = 1e-4  # unit-square distance under which a position snaps to its target
HUB_RADIUS = 0.34  # radius of the circle of hubs, in unit-square coordinates
HISTORY_POINTS = 2000  # accuracy samples kept per series (bounded memory on long runs)
HISTORY_MIN_GAP = 1.0  # seconds between two unchanged samples of a series


@dataclass(frozen=True)
class NodeInfo:
    """One node as a data source sees it.

    Parameters
    ----------
    id, name : str
        Stable node id and a human name.
    status : str
        ``alive`` | ``suspect`` | ``dead`` | ``left`` | ``gone``.
    group : str or None
        Group id the node belongs to, ``None`` when it is in no group.
    accuracy : float or None
        The node's latest accuracy on its own validation data (default: unknown).
    role : str
        ``node`` or ``observer``; observers (viewers) are not drawn (default: ``node``).
    """

    id: str
    name: str
    status: str = "alive"
    group: str | None = None
    accuracy: float | None = None
    role: str = "node"


@dataclass(frozen=True)
class GroupInfo:
    """One learning group: leader, members and latest round metrics."""

    id: str
    name: str
    leader: str | None = None
    members: tuple[str, ...] = ()
    accuracy: float | None = None
    loss: float | None = None
    round: int = 0
    term: int = 0
    spec: str = ""  # the model spec: groups of one spec sit side by side


@dataclass(frozen=True)
class ViewEvent:
    """One line of the ticker: wall-clock ``time`` (s), a short ``kind`` and readable ``text``."""

    time: float
    kind: str
    text: str


@dataclass(frozen=True)
class NetworkView:
    """A snapshot of the network, the only thing the viewer draws from.

    ``stats`` carries source-level figures: ``messages_per_s`` (float) and ``registry`` (a short
    string saying what the source knows of the registry); other keys are shown as they are.
    """

    time: float
    nodes: tuple[NodeInfo, ...] = ()
    groups: tuple[GroupInfo, ...] = ()
    stats: dict[str, float | int | str] = field(default_factory=dict)
    events: tuple[ViewEvent, ...] = ()


def stable_unit(key: str, salt: str = "") -> float:
    """Map ``key`` to a number in ``[0, 1)`` that is the same in every process (unlike ``hash``)."""
    return zlib.crc32((salt + key).encode("utf-8")) / 2**32


def diff_views(old: NetworkView | None, new: NetworkView) -> list[ViewEvent]:
    """Events that explain how ``old`` became ``new``: joins, migrations, deaths, groups, rounds.

    Observers are ignored. Round events are thinned to one per ten rounds so the ticker stays
    readable while groups train continuously.
    """
    if old is None:
        return []
    t = new.time
    events: list[ViewEvent] = []
    old_nodes = {n.id: n for n in old.nodes if n.role != "observer"}
    new_nodes = {n.id: n for n in new.nodes if n.role != "observer"}
    old_groups = {g.id: g for g in old.groups}
    new_groups = {g.id: g for g in new.groups}
    gname = {**{g.id: g.name for g in old.groups}, **{g.id: g.name for g in new.groups}}

    for gid, g in new_groups.items():
        if gid not in old_groups:
            events.append(ViewEvent(t, "created", f"group {g.name} created"))
    for nid, n in new_nodes.items():
        before = old_nodes.get(nid)
        if before is None:
            where = f" in {gname.get(n.group, n.group)}" if n.group else ""
            events.append(ViewEvent(t, "joined", f"{n.name} joined{where}"))
            continue
        if n.status != before.status and n.status in _FADING_STATUSES | {"suspect"}:
            events.append(ViewEvent(t, n.status, f"{n.name} is {n.status}"))
        elif n.status == "alive" and before.status != "alive":
            events.append(ViewEvent(t, "alive", f"{n.name} is alive again"))
        if n.group != before.group and n.status == "alive":
            a = gname.get(before.group, before.group) if before.group else None
            b = gname.get(n.group, n.group) if n.group else None
            if a and b:
                events.append(ViewEvent(t, "migrated", f"{n.name} migrated {a} -> {b}"))
            elif b:
                events.append(ViewEvent(t, "joined", f"{n.name} joined {b}"))
            elif a:
                events.append(ViewEvent(t, "left", f"{n.name} left {a}"))
    for nid, n in old_nodes.items():
        if nid not in new_nodes and n.status not in _FADING_STATUSES:
            events.append(ViewEvent(t, "left", f"{n.name} left the network"))
    for gid, g in old_groups.items():
        if gid not in new_groups:
            events.append(ViewEvent(t, "dissolved", f"group {g.name} dissolved"))
    for gid, g in new_groups.items():
        before = old_groups.get(gid)
        if before is not None and g.leader != before.leader and g.leader:
            leader = new_nodes.get(g.leader)
            who = leader.name if leader else g.leader
            events.append(ViewEvent(t, "leader", f"{who} leads {g.name} (term {g.term})"))
        if before is not None and g.round // 10 > before.round // 10:
            acc = f", acc {g.accuracy:.2f}" if g.accuracy is not None else ""
            events.append(ViewEvent(t, "round", f"{g.name} round {g.round}{acc}"))
    return events


@dataclass
class SceneHub:
    """A group's hub as drawn: eased position, fade, colour and the latest group record."""

    info: GroupInfo
    colour: tuple[int, int, int]
    order: int
    pos: tuple[float, float]
    target: tuple[float, float]
    ring: float = 0.08
    alpha: float = 0.0
    present: bool = True


@dataclass
class SceneNode:
    """A node as drawn: eased position, fade and the group it is drawn with."""

    info: NodeInfo
    pos: tuple[float, float]
    target: tuple[float, float]
    alpha: float = 0.0
    is_leader: bool = False
    present: bool = True


def _ease(pos: tuple[float, float], target: tuple[float, float], k: float) -> tuple[float, float]:
    """Move a fraction ``k`` of the way; snap when closer than a pixel's tenth, so rest is exact."""
    dx, dy = target[0] - pos[0], target[1] - pos[1]
    if dx * dx + dy * dy < SNAP_DISTANCE**2:
        return target
    return (pos[0] + dx * k, pos[1] + dy * k)


def _toward(value: float, goal: float, step: float) -> float:
    if value < goal:
        return min(goal, value + step)
    return max(goal, value - step)


class Scene:
    """Turns successive :class:`NetworkView` snapshots into a stable, animated picture.

    Call :meth:`update` with each new snapshot and :meth:`step` once per frame with the elapsed
    time. Layout rules: hubs sit on a circle grouped by model spec (nodes of different specs
    never share a group), each spec's in order of first appearance; members sit around their
    hub at an angle fixed by a hash of their id; nodes in no group float in a lobby; every
    position eases toward its target, so a migrating node travels from hub to hub.
    """

    def __init__(self, max_events: int = 50) -> None:
        self.hubs: dict[str, SceneHub] = {}
        self.nodes: dict[str, SceneNode] = {}
        self.events: deque[ViewEvent] = deque(maxlen=max_events)
        self.group_history: dict[str, deque[tuple[float, float]]] = {}
        self.mean_history: deque[tuple[float, float]] = deque(maxlen=HISTORY_POINTS)
        self.migrations = 0
        self.view: NetworkView | None = None
        self.start_time: float | None = None
        self._colours: dict[str, tuple[int, int, int]] = {}
        self._next_order = 0
        self._seen_events: set[tuple[float, str, str]] = set()

    # -- colours -----------------------------------------------------------------------------
    def colour_of(self, group_id: str | None) -> tuple[int, int, int]:
        """The group's colour: a hash into the palette, probing past colours already on screen.

        Once given, a group's colour never changes while the viewer runs.
        """
        if group_id is None:
            return UNGROUPED_COLOUR
        if group_id not in self._colours:
            used = {self._colours[g] for g in self.hubs if g in self._colours}
            start = zlib.crc32(group_id.encode("utf-8")) % len(PALETTE)
            colour = PALETTE[start]
            for i in range(len(PALETTE)):
                candidate = PALETTE[(start + i) % len(PALETTE)]
                if candidate not in used:
                    colour = candidate
                    break
            self._colours[group_id] = colour
        return self._colours[group_id]

    # -- snapshots ---------------------------------------------------------------------------
    def update(self, view: NetworkView) -> None:
        """Take a new snapshot: new targets, fades, histories, counters and ticker lines."""
        if self.start_time is None:
            self.start_time = view.time
        groups = {g.id: g for g in view.groups}
        for gid, g in groups.items():
            hub = self.hubs.get(gid)
            if hub is None:
                colour = self.colour_of(gid)
                hub = SceneHub(g, colour, self._next_order, (0.5, 0.5), (0.5, 0.5))
                self._next_order += 1
                self.hubs[gid] = hub
                hub.pos = hub.target = self._placeholder_pos(hub)
            hub.info = g
            hub.present = True
        for gid, hub in self.hubs.items():
            if gid not in groups:
                hub.present = False
        self._layout_hubs()

        visible = [n for n in view.nodes if n.role != "observer"]
        member_of = {m: g.id for g in view.groups for m in g.members}
        leaders = {g.leader for g in view.groups if g.leader}
        seen: set[str] = set()
        for info in visible:
            group = info.group if info.group in groups else member_of.get(info.id)
            if group != info.group:
                info = NodeInfo(info.id, info.name, info.status, group, info.accuracy, info.role)
            seen.add(info.id)
            node = self.nodes.get(info.id)
            if node is None:
                target = self._node_target(info)
                node = SceneNode(info, target, target)
                self.nodes[info.id] = node
            else:
                old_group = node.info.group
                if old_group and info.group and old_group != info.group:
                    self.migrations += 1
            node.info = info
            node.present = True
            node.is_leader = info.id in leaders and info.group is not None
            if info.status not in _FADING_STATUSES:
                node.target = self._node_target(info)  # the dead stay where they fell
        for nid, node in self.nodes.items():
            if nid not in seen:
                node.present = False

        self._record_history(view)
        for ev in view.events:
            key = (ev.time, ev.kind, ev.text)
            if key not in self._seen_events:
                self._seen_events.add(key)
                self.events.append(ev)
        if len(self._seen_events) > 10 * (self.events.maxlen or 50):
            self._seen_events = {(e.time, e.kind, e.text) for e in self.events}
        self.view = view

    def step(self, dt: float) -> None:
        """Advance the animation by ``dt`` seconds: ease positions, fade, drop what has faded."""
        dt = max(0.0, dt)
        k = 1.0 - math.exp(-dt / POSITION_TAU)
        fade = dt / FADE_SECONDS
        for gid in list(self.hubs):
            hub = self.hubs[gid]
            hub.pos = _ease(hub.pos, hub.target, k)
            hub.alpha = _toward(hub.alpha, 1.0 if hub.present else 0.0, fade)
            if not hub.present and hub.alpha <= 0.0:
                del self.hubs[gid]
        for nid in list(self.nodes):
            node = self.nodes[nid]
            if node.info.group in self.hubs and node.info.status not in _FADING_STATUSES:
                node.target = self._node_target(node.info)  # follow a hub that glides
            node.pos = _ease(node.pos, node.target, k)
            node.alpha = _toward(node.alpha, self._target_alpha(node), fade)
            if node.alpha <= 0.0 and self._target_alpha(node) == 0.0:
                del self.nodes[nid]

    # -- derived figures ---------------------------------------------------------------------
    def stats(self) -> dict[str, str]:
        """The statistics panel: label -> value, in display order."""
        view = self.view
        alive = sum(1 for n in self.nodes.values() if n.present and n.info.status == "alive")
        groups = sum(1 for h in self.hubs.values() if h.present)
        rounds = sum(h.info.round for h in self.hubs.values() if h.present)
        out = {
            "nodes alive": str(alive),
            "groups": str(groups),
            "rounds": str(rounds),
            "migrations": str(self.migrations),
        }
        specs = {h.info.spec for h in self.hubs.values() if h.present}
        if len(specs) > 1:  # nodes of different specs never share a group
            out["specs"] = str(len(specs))
        rate = view.stats.get("messages_per_s") if view else None
        out["gossip msgs/s"] = f"{rate:.0f}" if isinstance(rate, int | float) else "-"
        mean = self.mean_history[-1][1] if self.mean_history else None
        out["mean accuracy"] = f"{mean:.3f}" if mean is not None else "-"
        out["registry"] = str(view.stats.get("registry", "-")) if view else "-"
        return out

    def hub_label(self, hub: SceneHub) -> str:
        """The text under a hub: its name, its spec's name when the network holds several
        specs, and its accuracy."""
        label = hub.info.name
        if len({h.info.spec for h in self.hubs.values() if h.present}) > 1:
            label += f"  {spec_name(hub.info.spec)}"
        acc = hub.info.accuracy
        return label + (f"  {acc:.2f}" if acc is not None else "")

    # -- layout ------------------------------------------------------------------------------
    def _ordered_hubs(self) -> list[SceneHub]:
        return sorted(self.hubs.values(), key=lambda h: (h.info.spec, h.order))

    def _hub_slot(self, index: int, count: int) -> tuple[float, float]:
        if count <= 1:
            return (0.5, 0.5)
        angle = math.pi + 2.0 * math.pi * index / count
        return (0.5 + HUB_RADIUS * math.cos(angle), 0.5 + HUB_RADIUS * math.sin(angle))

    def _placeholder_pos(self, hub: SceneHub) -> tuple[float, float]:
        count = len(self.hubs)
        return self._hub_slot(count - 1, count)

    def _layout_hubs(self) -> None:
        hubs = self._ordered_hubs()
        count = len(hubs)
        spacing = 2 * HUB_RADIUS * math.sin(math.pi / count) if count > 1 else 0.6
        for i, hub in enumerate(hubs):
            hub.target = self._hub_slot(i, count)
            size = len(hub.info.members)
            hub.ring = min(0.4 * spacing, 0.07 + 0.02 * math.sqrt(max(size, 1)), 0.16)

    def _node_target(self, info: NodeInfo) -> tuple[float, float]:
        angle = 2.0 * math.pi * stable_unit(info.id)
        wobble = 0.8 + 0.4 * stable_unit(info.id, "r")  # two nodes rarely share a spot
        hub = self.hubs.get(info.group) if info.group else None
        if hub is not None:
            cx, cy = hub.pos
            radius = hub.ring * wobble
        else:
            count = sum(1 for h in self.hubs.values())
            cx, cy = 0.5, 0.5
            radius = (0.46 if count == 1 else 0.06) * wobble  # lobby: centre, or around one hub
        return (cx + radius * math.cos(angle), cy + radius * math.sin(angle))

    @staticmethod
    def _target_alpha(node: SceneNode) -> float:
        if not node.present or node.info.status in _FADING_STATUSES:
            return 0.0
        return 0.5 if node.info.status == "suspect" else 1.0

    def _record_history(self, view: NetworkView) -> None:
        t = view.time
        for g in view.groups:
            if g.accuracy is None:
                continue
            series = self.group_history.setdefault(g.id, deque(maxlen=HISTORY_POINTS))
            _append_sample(series, t, g.accuracy)
        accs = [
            n.accuracy
            for n in view.nodes
            if n.role != "observer" and n.status == "alive" and n.accuracy is not None
        ]
        if accs:
            _append_sample(self.mean_history, t, sum(accs) / len(accs))


def spec_name(spec: str, most: int = 24) -> str:
    """A spec key's name (before its shapes), short enough for a label."""
    name = spec.split(":", 1)[0] or "-"
    return name if len(name) <= most else name[: most - 1] + "…"


def _append_sample(series: deque[tuple[float, float]], t: float, value: float) -> None:
    """Append unless the value is unchanged and the last sample is recent (keeps series short)."""
    if series:
        last_t, last_v = series[-1]
        if t < last_t:
            return
        if last_v == value and t - last_t < HISTORY_MIN_GAP:
            return
    series.append((t, value))
