"""Draw a :class:`viz.scene.Scene` on a pygame surface: topology, chart, statistics, ticker.

The layout is computed from the surface size on every frame, so a resized window just works.
Fading is done by blending colours with the background, not with per-pixel alpha surfaces, which
keeps a frame of 100 nodes well under a millisecond or two.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pygame

from viz.scene import Scene, ViewEvent

Colour = tuple[int, int, int]

BACKGROUND: Colour = (16, 18, 24)
PANE: Colour = (26, 29, 38)
GRID: Colour = (48, 52, 64)
TEXT: Colour = (220, 222, 230)
DIM_TEXT: Colour = (140, 144, 158)
MEAN_COLOUR: Colour = (245, 245, 245)
EVENT_COLOURS: dict[str, Colour] = {
    "created": (110, 205, 120),
    "joined": (86, 180, 233),
    "migrated": (240, 200, 70),
    "left": (170, 170, 180),
    "dead": (230, 97, 89),
    "suspect": (255, 150, 60),
    "dissolved": (204, 121, 200),
    "leader": (80, 215, 200),
}
TICKER_LINES = 4
MARGIN = 8


@dataclass(frozen=True)
class Layout:
    """The panes of one frame, in pixels."""

    topology: pygame.Rect
    chart: pygame.Rect
    stats: pygame.Rect
    ticker: pygame.Rect


def compute_layout(size: tuple[int, int]) -> Layout:
    """Split a window of ``size`` into panes: topology left, chart and stats right, ticker below."""
    w, h = max(size[0], 320), max(size[1], 240)
    ticker_h = max(64, min(110, int(h * 0.15)))
    body_h = h - ticker_h - 3 * MARGIN
    left_w = int(w * 0.58)
    right_x = left_w + 2 * MARGIN
    right_w = w - right_x - MARGIN
    chart_h = int(body_h * 0.55)
    topology = pygame.Rect(MARGIN, MARGIN, left_w, body_h)
    chart = pygame.Rect(right_x, MARGIN, right_w, chart_h)
    stats = pygame.Rect(right_x, 2 * MARGIN + chart_h, right_w, body_h - chart_h - MARGIN)
    ticker = pygame.Rect(MARGIN, 2 * MARGIN + body_h, w - 2 * MARGIN, ticker_h)
    return Layout(topology, chart, stats, ticker)


def blend(colour: Colour, alpha: float, under: Colour = PANE) -> Colour:
    """``colour`` seen at opacity ``alpha`` (0..1) over ``under``."""
    a = min(1.0, max(0.0, alpha))
    return (
        int(under[0] + (colour[0] - under[0]) * a),
        int(under[1] + (colour[1] - under[1]) * a),
        int(under[2] + (colour[2] - under[2]) * a),
    )


class Renderer:
    """Draws scenes; holds the fonts and a small cache of rendered text.

    ``pygame.font`` must be initialised (``pygame.init()`` or ``pygame.font.init()``).
    """

    def __init__(self) -> None:
        self._fonts: dict[int, pygame.font.Font] = {}
        self._text_cache: dict[tuple[str, int, Colour], pygame.Surface] = {}

    # -- text --------------------------------------------------------------------------------
    def _font(self, size: int) -> pygame.font.Font:
        if size not in self._fonts:
            self._fonts[size] = pygame.font.Font(None, size)  # bundled default font
        return self._fonts[size]

    def _text(self, text: str, size: int, colour: Colour) -> pygame.Surface:
        key = (text, size, colour)
        surf = self._text_cache.get(key)
        if surf is None:
            if len(self._text_cache) > 2000:
                self._text_cache.clear()  # bounded: labels change as metrics move
            surf = self._font(size).render(text, True, colour)
            self._text_cache[key] = surf
        return surf

    def _blit_text(
        self, surface: pygame.Surface, text: str, pos: tuple[int, int], size: int, colour: Colour
    ) -> pygame.Rect:
        surf = self._text(text, size, colour)
        return surface.blit(surf, pos)

    def _pane(self, surface: pygame.Surface, rect: pygame.Rect, title: str) -> None:
        pygame.draw.rect(surface, PANE, rect, border_radius=6)
        self._blit_text(surface, title, (rect.x + 8, rect.y + 6), 20, DIM_TEXT)

    # -- frame -------------------------------------------------------------------------------
    def draw(self, surface: pygame.Surface, scene: Scene, now: float | None = None) -> Layout:
        """Draw one whole frame of ``scene`` on ``surface``; return the layout used.

        ``now`` is the wall-clock time used for the chart's right edge and ticker ages
        (default: the scene's latest snapshot time).
        """
        if now is None:
            now = scene.view.time if scene.view else time.time()
        layout = compute_layout(surface.get_size())
        surface.fill(BACKGROUND)
        self.draw_topology(surface, layout.topology, scene)
        self.draw_chart(surface, layout.chart, scene, now)
        self.draw_stats(surface, layout.stats, scene)
        self.draw_ticker(surface, layout.ticker, list(scene.events), now)
        return layout

    def draw_topology(self, surface: pygame.Surface, rect: pygame.Rect, scene: Scene) -> None:
        """Hubs (leader ringed), member dots and the edges between them."""
        self._pane(surface, rect, "topology")
        inner = rect.inflate(-24, -40).move(0, 10)
        side = min(inner.width, inner.height)
        ox = inner.x + (inner.width - side) / 2
        oy = inner.y + (inner.height - side) / 2

        def to_px(p: tuple[float, float]) -> tuple[int, int]:
            return (int(ox + p[0] * side), int(oy + p[1] * side))

        dot = max(3, int(side / 90))
        hubs = scene.hubs
        for node in scene.nodes.values():  # edges first, so dots sit on top
            hub = hubs.get(node.info.group) if node.info.group else None
            if hub is None or node.alpha <= 0.0:
                continue
            colour = blend(hub.colour, 0.35 * min(node.alpha, hub.alpha))
            pygame.draw.line(
                surface, colour, to_px(node.pos), to_px(hub.pos), 2 if node.is_leader else 1
            )
        for hub in hubs.values():
            centre = to_px(hub.pos)
            radius = int(dot * 1.6 + 1.2 * math.sqrt(len(hub.info.members) + 1))
            pygame.draw.circle(surface, blend(hub.colour, 0.55 * hub.alpha), centre, radius)
            pygame.draw.circle(surface, blend(hub.colour, hub.alpha), centre, radius, 2)
            surf = self._text(scene.hub_label(hub), 17, blend(TEXT, hub.alpha))
            below = max(radius, int(hub.ring * 1.2 * side) + dot) + 3  # under the member ring
            surface.blit(surf, (centre[0] - surf.get_width() // 2, centre[1] + below))
        for node in scene.nodes.values():
            if node.alpha <= 0.0:
                continue
            hub = hubs.get(node.info.group) if node.info.group else None
            base = hub.colour if hub is not None else scene.colour_of(None)
            centre = to_px(node.pos)
            if node.is_leader:
                pygame.draw.circle(surface, blend(MEAN_COLOUR, node.alpha), centre, dot + 3)
            if node.info.status == "suspect":
                pygame.draw.circle(surface, blend(base, node.alpha), centre, dot, 2)
            else:
                pygame.draw.circle(surface, blend(base, node.alpha), centre, dot)
        if not hubs and not scene.nodes:
            self._blit_text(
                surface, "waiting for the network ...", (inner.x, inner.y), 20, DIM_TEXT
            )

    def draw_chart(
        self, surface: pygame.Surface, rect: pygame.Rect, scene: Scene, now: float
    ) -> None:
        """Accuracy over time: one line per group in its colour, the node mean in white."""
        self._pane(surface, rect, "accuracy over time")
        plot = pygame.Rect(rect.x + 34, rect.y + 28, rect.width - 44, rect.height - 50)
        if plot.width < 20 or plot.height < 20:
            return
        for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = plot.bottom - int(frac * plot.height)
            pygame.draw.line(surface, GRID, (plot.x, y), (plot.right, y))
            self._blit_text(
                surface, f"{frac:.2f}".lstrip("0") or "0", (rect.x + 4, y - 6), 15, DIM_TEXT
            )
        t0 = scene.start_time if scene.start_time is not None else now
        span = max(10.0, now - t0)
        self._blit_text(surface, f"{span:.0f} s", (plot.right - 34, plot.bottom + 4), 15, DIM_TEXT)

        def series_points(series: object) -> list[tuple[int, int]]:
            pts: list[tuple[int, int]] = []
            last_x = -1
            for t, v in series:  # type: ignore[attr-defined]
                x = plot.x + int((t - t0) / span * plot.width)
                y = plot.bottom - int(min(1.0, max(0.0, v)) * plot.height)
                if x == last_x and pts:
                    pts[-1] = (x, y)  # one point per pixel column
                else:
                    pts.append((x, y))
                last_x = x
            return pts

        for gid, series in scene.group_history.items():
            pts = series_points(series)
            alive = gid in scene.hubs and scene.hubs[gid].present
            colour = scene.colour_of(gid) if alive else blend(scene.colour_of(gid), 0.4)
            if len(pts) >= 2:
                pygame.draw.lines(surface, colour, False, pts, 2)
            elif pts:
                pygame.draw.circle(surface, colour, pts[0], 2)
        pts = series_points(scene.mean_history)
        if len(pts) >= 2:
            pygame.draw.lines(surface, MEAN_COLOUR, False, pts, 2)
        self._blit_text(
            surface, "white: mean node accuracy", (rect.x + 150, rect.y + 7), 15, DIM_TEXT
        )

    def draw_stats(self, surface: pygame.Surface, rect: pygame.Rect, scene: Scene) -> None:
        """The statistics panel, one ``label  value`` line each."""
        self._pane(surface, rect, "statistics")
        y = rect.y + 30
        line = 20
        for label, value in scene.stats().items():
            if y + line > rect.bottom:
                break
            self._blit_text(surface, label, (rect.x + 12, y), 19, DIM_TEXT)
            text = value if len(value) <= 34 else value[:33] + "…"
            self._blit_text(surface, text, (rect.x + 130, y), 19, TEXT)
            y += line

    def draw_ticker(
        self, surface: pygame.Surface, rect: pygame.Rect, events: list[ViewEvent], now: float
    ) -> None:
        """The latest events, newest first, with their age."""
        self._pane(surface, rect, "events")
        lines = max(1, min(TICKER_LINES, (rect.height - 26) // 17))
        y = rect.y + 24
        for ev in reversed(events[-lines:]):
            age = max(0.0, now - ev.time)
            colour = EVENT_COLOURS.get(ev.kind, TEXT)
            self._blit_text(surface, f"{age:4.0f}s ago", (rect.x + 12, y), 17, DIM_TEXT)
            self._blit_text(surface, ev.text, (rect.x + 90, y), 17, colour)
            y += 17
