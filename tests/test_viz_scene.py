"""The viewer's pure parts: scene layout and animation, event derivation, snapshot parsing."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import msgspec
import pytest

from mycelium_p2p import snapshot
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.registry_api import NetworkOut
from viz.scene import (
    PALETTE,
    GroupInfo,
    NetworkView,
    NodeInfo,
    Scene,
    ViewEvent,
    diff_views,
)
from viz.sources import (
    message_count,
    parse_peers,
    view_from_snapshot,
)


def make_view(
    t: float, assign: dict[str, str | None], status: dict[str, str] | None = None
) -> NetworkView:
    """A view where node -> group is ``assign``; the first member of each group leads."""
    status = status or {}
    gids = sorted({g for g in assign.values() if g})
    groups = []
    for i, gid in enumerate(gids):
        members = tuple(sorted(n for n, g in assign.items() if g == gid))
        groups.append(GroupInfo(gid, f"G{i}", members[0], members, 0.5 + 0.1 * i, 0.3, 10, 1))
    nodes = tuple(
        NodeInfo(n, f"name-{n}", status.get(n, "alive"), g, 0.6) for n, g in assign.items()
    )
    return NetworkView(t, nodes, tuple(groups), {"messages_per_s": 12.0, "registry": "ok"})


def settle(scene: Scene, seconds: float = 5.0, dt: float = 1 / 30) -> None:
    for _ in range(int(seconds / dt)):
        scene.step(dt)


def dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def test_scene_has_one_hub_per_group_and_one_dot_per_node() -> None:
    assign = {f"n{i}": f"g-{i % 3}" for i in range(12)} | {"lonely": None}
    observer = NodeInfo("viewer", "viewer", role="observer")
    view = make_view(0.0, assign)
    view = NetworkView(0.0, (*view.nodes, observer), view.groups, view.stats)
    scene = Scene()
    scene.update(view)
    settle(scene)
    assert set(scene.hubs) == {"g-0", "g-1", "g-2"}
    assert set(scene.nodes) == set(assign)  # the observer is not drawn
    leaders = {nid for nid, n in scene.nodes.items() if n.is_leader}
    assert leaders == {g.leader for g in view.groups}
    assert all(n.alpha == 1.0 for n in scene.nodes.values())
    # members sit around their own hub, closer to it than to any other hub
    for node in scene.nodes.values():
        if node.info.group is None:
            continue
        own = dist(node.pos, scene.hubs[node.info.group].pos)
        assert all(
            own < dist(node.pos, h.pos) for g, h in scene.hubs.items() if g != node.info.group
        )
    stats = scene.stats()
    assert stats["nodes alive"] == "13" and stats["groups"] == "3" and stats["rounds"] == "30"
    assert stats["gossip msgs/s"] == "12" and stats["registry"] == "ok"


def test_layout_is_stable_and_independent_of_node_order() -> None:
    assign = {f"n{i}": f"g-{i % 4}" for i in range(40)}
    a, b = Scene(), Scene()
    view = make_view(0.0, assign)
    a.update(view)
    b.update(NetworkView(0.0, tuple(reversed(view.nodes)), view.groups, view.stats))
    settle(a)
    settle(b)
    before = {nid: n.pos for nid, n in a.nodes.items()}
    assert all(dist(before[nid], b.nodes[nid].pos) < 1e-9 for nid in before)
    for t in range(1, 6):  # the same network again: nothing moves
        a.update(make_view(float(t), assign))
        a.step(1 / 30)
    assert all(dist(before[nid], a.nodes[nid].pos) < 1e-6 for nid in before)
    for n in a.nodes.values():
        assert 0.0 <= n.pos[0] <= 1.0 and 0.0 <= n.pos[1] <= 1.0


def test_colours_are_stable_and_distinct_per_group() -> None:
    scene = Scene()
    assign = {f"n{i}": f"g-{i:08x}" for i in range(8)}
    scene.update(make_view(0.0, assign))
    colours = {gid: hub.colour for gid, hub in scene.hubs.items()}
    assert len(set(colours.values())) == 8  # probing avoids collisions on screen
    assert all(c in PALETTE for c in colours.values())
    scene.update(make_view(1.0, {"x": "g-new"} | assign))
    assert all(scene.hubs[g].colour == c for g, c in colours.items())
    other = Scene()
    other.update(make_view(0.0, {"n0": "g-00000000"}))
    assert other.colour_of("g-00000000") == scene.colour_of("g-00000000")


def test_migrating_node_travels_monotonically_from_hub_a_to_hub_b() -> None:
    assign: dict[str, str | None] = {f"n{i}": ("A" if i < 4 else "B") for i in range(8)}
    scene = Scene()
    scene.update(make_view(0.0, assign))
    settle(scene)
    hub_a, hub_b = scene.hubs["A"].pos, scene.hubs["B"].pos
    start = scene.nodes["n3"].pos
    assert dist(start, hub_a) < dist(start, hub_b)

    assign["n3"] = "B"
    scene.update(make_view(1.0, assign))
    axis = (hub_b[0] - hub_a[0], hub_b[1] - hub_a[1])
    length = math.hypot(*axis)

    def progress(p: tuple[float, float]) -> float:
        """How far along the line from hub A to hub B the point is (0 at A, 1 at B)."""
        return ((p[0] - hub_a[0]) * axis[0] + (p[1] - hub_a[1]) * axis[1]) / length**2

    positions = [scene.nodes["n3"].pos]
    for _ in range(60):
        scene.step(1 / 30)
        positions.append(scene.nodes["n3"].pos)
    steps = [progress(q) - progress(p) for p, q in itertools.pairwise(positions)]
    assert all(s >= 0.0 for s in steps)  # never moves back toward A
    moving = [s for s in steps if s > 0.0]
    assert len(moving) >= 15  # travels over many frames, not in one jump
    assert max(steps) < 0.25 * sum(steps)
    assert progress(positions[0]) < 0.25 and progress(positions[-1]) > 0.75
    end = positions[-1]
    assert dist(end, scene.nodes["n3"].target) < 0.02 and dist(end, hub_b) < dist(end, hub_a)
    assert scene.migrations == 1


def test_dead_nodes_and_dissolved_groups_fade_out() -> None:
    assign: dict[str, str | None] = {"a": "G1", "b": "G1", "c": "G2"}
    scene = Scene()
    scene.update(make_view(0.0, assign))
    settle(scene)
    spot = scene.nodes["a"].pos
    scene.update(make_view(1.0, {"a": "G1", "b": "G1"}, {"a": "dead"}))  # c and G2 gone
    scene.step(0.3)
    assert 0.0 < scene.nodes["a"].alpha < 1.0 and 0.0 < scene.hubs["G2"].alpha < 1.0
    assert dist(scene.nodes["a"].pos, spot) < 1e-9  # the dead stay where they fell
    settle(scene, 3.0)
    assert "a" not in scene.nodes and "c" not in scene.nodes and "G2" not in scene.hubs
    assert set(scene.hubs) == {"G1"} and scene.stats()["nodes alive"] == "1"


def test_new_group_fades_in_and_hubs_glide_to_new_slots() -> None:
    scene = Scene()
    scene.update(make_view(0.0, {"a": "G1", "b": "G2"}))
    settle(scene)
    old = scene.hubs["G1"].pos
    scene.update(make_view(1.0, {"a": "G1", "b": "G2", "c": "G3"}))
    assert scene.hubs["G3"].alpha == 0.0
    scene.step(1 / 30)
    assert 0.0 < scene.hubs["G3"].alpha < 1.0
    assert dist(scene.hubs["G1"].pos, old) < 0.05  # no jump
    settle(scene)
    assert scene.hubs["G3"].alpha == 1.0
    slots = [h.pos for h in scene.hubs.values()]
    assert min(dist(p, q) for i, p in enumerate(slots) for q in slots[i + 1 :]) > 0.3


def test_groups_of_one_spec_sit_side_by_side_and_say_their_spec() -> None:
    """Nodes of different specs never share a group: the viewer shows each spec's groups
    together on the circle, and names the spec under each hub when there are several."""
    specs = ["mlp:1x8x8:10", "logreg:f4[64x10],f4[10]"]
    assign = {f"n{i}": f"G{i % 6}" for i in range(12)}
    view = make_view(0.0, assign)  # groups appear in the order G0..G5, specs alternating
    groups = tuple(
        GroupInfo(g.id, g.name, g.leader, g.members, g.accuracy, spec=specs[i % 2])
        for i, g in enumerate(view.groups)
    )
    scene = Scene()
    scene.update(NetworkView(0.0, view.nodes, groups, view.stats))
    settle(scene)
    around = sorted(scene.hubs.values(), key=lambda h: math.atan2(h.pos[1] - 0.5, h.pos[0] - 0.5))
    kinds = [h.info.spec for h in around]
    changes = sum(kinds[i] != kinds[i - 1] for i in range(len(kinds)))  # cyclic
    print(kinds, changes)
    assert changes == 2  # two arcs, one per spec
    assert scene.stats()["specs"] == "2"
    labels = {h.info.spec: scene.hub_label(h) for h in scene.hubs.values()}
    assert "  mlp  " in labels[specs[0]] and "  logreg  " in labels[specs[1]]
    alone = Scene()
    alone.update(make_view(0.0, assign))
    assert "specs" not in alone.stats()
    assert alone.hub_label(alone.hubs["G0"]) == "G0  0.50"  # one spec: nothing to tell apart


def test_histories_record_group_and_mean_accuracy() -> None:
    scene = Scene()
    for t in range(5):
        view = make_view(float(t), {"a": "G", "b": "G"})
        nodes = tuple(NodeInfo(n.id, n.name, n.status, n.group, 0.1 * t) for n in view.nodes)
        groups = (GroupInfo("G", "G", "a", ("a", "b"), 0.2 * t / 2, 0.1, t),)
        scene.update(NetworkView(float(t), nodes, groups, view.stats))
    assert [v for _, v in scene.group_history["G"]] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert scene.mean_history[-1] == pytest.approx((4.0, 0.4))
    assert scene.stats()["mean accuracy"] == "0.400"


def test_scene_ticker_merges_events_without_duplicates() -> None:
    scene = Scene(max_events=3)
    e1, e2 = ViewEvent(1.0, "joined", "x joined"), ViewEvent(2.0, "left", "x left")
    scene.update(NetworkView(1.0, events=(e1,)))
    scene.update(NetworkView(2.0, events=(e1, e2)))
    assert list(scene.events) == [e1, e2]
    for i in range(5):
        scene.update(NetworkView(3.0 + i, events=(ViewEvent(3.0 + i, "k", str(i)),)))
    assert [e.text for e in scene.events] == ["2", "3", "4"]


def test_diff_views_explains_changes() -> None:
    old = make_view(0.0, {"a": "A", "b": "A", "c": "B", "d": None})
    new = make_view(1.0, {"a": "A", "b": "B", "c": "B", "d": "C", "e": "C"}, {"c": "dead"})
    texts = {(e.kind, e.text) for e in diff_views(old, new)}
    assert ("migrated", "name-b migrated G0 -> G1") in texts
    assert ("dead", "name-c is dead") in texts
    assert ("created", "group G2 created") in texts
    assert ("joined", "name-e joined in G2") in texts
    assert ("joined", "name-d joined G2") in texts
    assert diff_views(None, new) == []
    assert diff_views(new, new) == []
    g_old = GroupInfo("A", "A", "a", ("a",), 0.5, 0.1, 9, 1)
    g_new = GroupInfo("A", "A", "b", ("a", "b"), 0.6, 0.1, 10, 2)
    gone = diff_views(NetworkView(0, groups=(g_old,)), NetworkView(1, groups=(g_new,)))
    assert {e.kind for e in gone} == {"leader", "round"}
    assert diff_views(NetworkView(0, groups=(g_old,)), NetworkView(1))[0].kind == "dissolved"


def group_out(gid: str, name: str, **fields: object) -> dict[str, object]:
    """A group as the registry's /network answers it."""
    metrics = {"accuracy": None, "loss": None, "round": 0, "examples": 0}
    return {"id": gid, "name": name, "leader": None, "term": 1, "version": 1,
            "flower_address": "h:1", "members": [], "capacity": 5, "model": "m",
            "join_policy": "open", "invited": [], "status": "active", "metrics": metrics,
            "created_at": 0.0, "updated_at": 0.0, **fields}  # fmt: skip


def node_out(nid: str, name: str, status: str, group: str | None, **metrics: object) -> dict:
    """A node as the registry's /network answers it."""
    return {"id": nid, "name": name, "status": status, "group": group,
            "gossip_address": "h:2", "flower_address": None, "model": "m", "data": {},
            "metrics": {"accuracy": None, "loss": None, "round": None, **metrics},
            "registered_at": 0.0, "last_seen": 0.0}  # fmt: skip


REGISTRY_PAYLOAD = {
    "time": 100.0,
    "groups": [
        group_out("g-2", "second", leader="n2", term=3, members=["n2"], created_at=20.0,
                  metrics={"accuracy": 0.8, "loss": 0.4, "round": 7, "examples": 50}),
        group_out("g-1", "first", members=["n1"], created_at=10.0),
        group_out("g-old", "old", status="dissolved"),
    ],
    "nodes": [
        node_out("n1", "one", "alive", "g-1"),
        node_out("n2", "two", "suspect", "g-2", accuracy=0.7),
        node_out("n3", "three", "gone", None),
    ],
    "events": [
        {"id": 2, "ts": 50.0, "kind": "migrated", "node": "n2", "group": "g-2",
         "data": {"from": "g-1", "to": "g-2"}},
        {"id": 1, "ts": 40.0, "kind": "created", "node": "n1", "group": "g-1",
         "data": {"name": "first"}},
        {"id": 3, "ts": 60.0, "kind": "dissolved", "node": None, "group": "g-old", "data": {}},
    ],
}  # fmt: skip


def test_a_registry_snapshot_becomes_a_view() -> None:
    snap = snapshot.from_registry(msgspec.convert(REGISTRY_PAYLOAD, NetworkOut))
    view = view_from_snapshot(snap, now=123.0, stats={"registry": "snap"})
    assert view.time == 123.0 and view.stats == {"registry": "snap"}
    assert [g.id for g in view.groups] == ["g-1", "g-2"]  # creation order, dissolved dropped
    g1, g2 = view.groups
    assert g1.members == ("n1",) and g1.accuracy is None and g1.leader is None
    assert (g2.accuracy, g2.loss, g2.round, g2.term, g2.leader) == (0.8, 0.4, 7, 3, "n2")
    assert [(n.id, n.name, n.status, n.group, n.accuracy) for n in view.nodes] == [
        ("n1", "one", "alive", "g-1", None),
        ("n2", "two", "suspect", "g-2", 0.7),
        ("n3", "three", "gone", None, None),
    ]
    assert [e.text for e in view.events] == [
        "group first created by one",
        "two migrated first -> second",
        "group old dissolved",  # a dissolved group still names its events
    ]


def member(node_id: str, status: str, meta: dict) -> SimpleNamespace:
    """What a gossip ``MemberView`` shows a reader."""
    return SimpleNamespace(
        id=node_id, address=f"{node_id}:1", status=status, meta=meta,
        node_meta=NodeMeta.from_map(meta),
    )  # fmt: skip


def test_a_gossip_snapshot_leaves_zombies_and_observers_out() -> None:
    members = [
        member("a", "alive", {"name": "alpha", "group": "G", "accuracy": 0.9}),
        member("b", "suspect", {"group": "", "role": "node"}),
        member("c", "alive", {"group": "G"}),
        member("v", "alive", {"role": "observer", "name": "viewer"}),
    ]
    record = GroupRecord("G", name="gee", leader="a", members=("c", "a"), accuracy=0.8,
                         loss=0.2, round=4, term=2, capacity=5)  # fmt: skip
    zombie = GroupRecord("Z", name="z", leader="x", members=("x",), round=1)  # nobody says Z
    dead = GroupRecord("H", name="h", dissolved=True)
    snap = snapshot.from_gossip(members, {"G": record, "Z": zombie, "H": dead}, now=5.0)
    view = view_from_snapshot(snap, 5.0)
    assert [g.id for g in view.groups] == ["G"] and view.groups[0].members == ("a", "c")
    by_id = {n.id: n for n in view.nodes}
    assert set(by_id) == {"a", "b", "c"}  # the observer is not a node
    assert by_id["a"].name == "alpha" and by_id["a"].accuracy == 0.9
    assert by_id["b"].group is None and by_id["b"].status == "suspect"
    assert snap.to_json()["groups"][0]["metrics"]["round"] == 4


def test_parse_peers_and_message_count() -> None:
    assert parse_peers(["h:1", "", 3, "h:2"]) == ["h:1", "h:2"]
    assert parse_peers({"peers": [{"gossip_address": "h:3"}, {"x": 1}]}) == ["h:3"]
    assert parse_peers("nonsense") == []
    stats = {"frames_in": 5, "frames_out": 7, "bytes_in": 100, "drops": {"malformed": 2}}
    assert message_count(stats) == 12
    assert message_count({"msgs_in": 1, "messages_out": 2, "transport": {"peers": 3}}) == 3
