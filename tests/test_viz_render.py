"""Drawing a scene with pygame (headless): every group's colour shows, layouts fit any size."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pygame
import pytest

from viz.recorder import surface_to_array
from viz.render import Renderer, blend, compute_layout
from viz.scene import GroupInfo, NetworkView, NodeInfo, Scene, ViewEvent


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame.font.init()
    yield
    pygame.font.quit()


def network(groups: int, per_group: int, t: float = 0.0) -> NetworkView:
    nodes, infos = [], []
    for g in range(groups):
        gid = f"g-{g:08x}"
        members = tuple(f"n{g}-{i}" for i in range(per_group))
        infos.append(GroupInfo(gid, f"group {g}", members[0], members, 0.5 + 0.04 * g, 0.3, 5, 1))
        nodes += [NodeInfo(m, m, "alive", gid, 0.7) for m in members]
    events = (ViewEvent(t, "created", "group 0 created"), ViewEvent(t, "migrated", "x moved"))
    return NetworkView(t, tuple(nodes), tuple(infos), {"messages_per_s": 5.0}, events)


def colour_pixels(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(pixels == np.array(colour, dtype=np.uint8), axis=-1).sum())


def settled_scene(view: NetworkView) -> Scene:
    scene = Scene()
    scene.update(view)
    for _ in range(120):
        scene.step(1 / 30)
    return scene


def test_every_group_colour_appears_in_the_topology_pane() -> None:
    view = network(groups=5, per_group=4)
    scene = settled_scene(view)
    surface = pygame.Surface((960, 600))
    layout = Renderer().draw(surface, scene)
    topo = surface_to_array(surface.subsurface(layout.topology))
    for gid, hub in scene.hubs.items():
        assert colour_pixels(topo, hub.colour) > 40, gid  # hub ring and member dots
    absent = Scene().colour_of("not-on-screen")  # the palette colour nobody here uses
    used = {h.colour for h in scene.hubs.values()}
    if absent not in used:
        assert colour_pixels(topo, absent) == 0


def test_a_faded_group_leaves_no_pixels_of_its_colour() -> None:
    scene = settled_scene(network(groups=3, per_group=3))
    gone = next(iter(scene.hubs))
    colour = scene.hubs[gone].colour
    view = network(groups=3, per_group=3, t=1.0)
    scene.update(NetworkView(1.0, tuple(n for n in view.nodes if n.group != gone),
                             tuple(g for g in view.groups if g.id != gone)))  # fmt: skip
    for _ in range(90):
        scene.step(1 / 30)
    surface = pygame.Surface((960, 600))
    layout = Renderer().draw(surface, scene)
    assert colour_pixels(surface_to_array(surface.subsurface(layout.topology)), colour) == 0


def test_more_nodes_draw_more_dots() -> None:
    counts = []
    for per_group in (2, 8):
        scene = settled_scene(network(groups=1, per_group=per_group))
        surface = pygame.Surface((960, 600))
        layout = Renderer().draw(surface, scene)
        topo = surface_to_array(surface.subsurface(layout.topology))
        counts.append(colour_pixels(topo, scene.hubs["g-00000000"].colour))
    assert counts[1] > counts[0] * 2


@pytest.mark.parametrize("size", [(320, 240), (960, 600), (1920, 1080), (500, 900)])
def test_layout_fits_and_draws_at_any_size(size: tuple[int, int]) -> None:
    layout = compute_layout(size)
    screen = pygame.Rect(0, 0, *size)
    panes = [layout.topology, layout.chart, layout.stats, layout.ticker]
    assert all(screen.contains(p) and p.width > 0 and p.height > 0 for p in panes)
    assert all(not a.colliderect(b) for i, a in enumerate(panes) for b in panes[i + 1 :])
    surface = pygame.Surface(size)
    Renderer().draw(surface, settled_scene(network(4, 25)))  # 100 nodes


def test_empty_scene_and_a_chart_with_history_draw() -> None:
    surface = pygame.Surface((960, 600))
    renderer = Renderer()
    renderer.draw(surface, Scene(), now=0.0)
    scene = Scene()
    for t in range(30):
        scene.update(network(2, 3, t=float(t)))
        scene.step(0.5)
    before = surface_to_array(surface).copy()
    layout = renderer.draw(surface, scene)
    chart = surface_to_array(surface.subsurface(layout.chart))
    for hub in scene.hubs.values():
        assert colour_pixels(chart, hub.colour) > 0  # a line per group in its colour
    assert not np.array_equal(before, surface_to_array(surface))


def test_blend_goes_from_background_to_colour() -> None:
    assert blend((200, 100, 0), 0.0, (0, 0, 0)) == (0, 0, 0)
    assert blend((200, 100, 0), 1.0, (0, 0, 0)) == (200, 100, 0)
    assert blend((200, 100, 0), 0.5, (0, 0, 0)) == (100, 50, 0)
    assert blend((200, 100, 0), 7.0, (0, 0, 0)) == (200, 100, 0)
