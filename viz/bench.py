"""Measure the viewer's cost per frame: scene step, drawing and frame capture, by network size."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from viz.scene import Scene
from viz.sources import SyntheticSource


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_frames(
    nodes: int, groups: int, frames: int = 300, size: tuple[int, int] = (960, 600)
) -> dict[str, Any]:
    """Draw ``frames`` frames of a simulated network off-screen; return per-frame milliseconds.

    The simulated clock advances 1/30 s per frame, so the network changes (migrations, deaths,
    new groups) as it would on screen; nothing sleeps.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import pygame

    from viz.recorder import surface_to_array
    from viz.render import Renderer

    t = [1000.0]
    source = SyntheticSource(
        nodes, groups, rng=random.Random(7), clock=lambda: t[0], churn_every=0.5
    )
    source.start()
    pygame.font.init()
    surface = pygame.Surface(size)
    scene, renderer = Scene(), Renderer()
    step_ms, draw_ms, capture_ms = [], [], []
    for i in range(frames):
        t[0] += 1 / 30
        a = time.perf_counter()
        if i % 8 == 0:  # the run loop polls its source about 4 times a second
            scene.update(source.view())
        scene.step(1 / 30)
        b = time.perf_counter()
        renderer.draw(surface, scene, now=t[0])
        c = time.perf_counter()
        surface_to_array(surface)
        d = time.perf_counter()
        step_ms.append((b - a) * 1e3)
        draw_ms.append((c - b) * 1e3)
        capture_ms.append((d - c) * 1e3)
    total = [s + d for s, d in zip(step_ms, draw_ms, strict=True)]
    return {
        "nodes": nodes,
        "groups": groups,
        "frames": frames,
        "width": size[0],
        "height": size[1],
        "scene_ms_mean": sum(step_ms) / frames,
        "draw_ms_mean": sum(draw_ms) / frames,
        "frame_ms_mean": sum(total) / frames,
        "frame_ms_p95": _percentile(total, 0.95),
        "capture_ms_mean": sum(capture_ms) / frames,
        "max_fps": 1000.0 / (sum(total) / frames),
    }
