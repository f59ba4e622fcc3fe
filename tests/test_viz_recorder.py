"""GIF and PNG recording: many frames that change over time, bounded by decimation."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pygame
import pytest

from viz.recorder import GifRecorder, save_png, surface_to_array
from viz.render import Renderer
from viz.scene import Scene
from viz.sources import SyntheticSource


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    pygame.font.init()
    yield
    pygame.font.quit()


def test_gif_has_many_frames_that_change_over_time(tmp_path: Path) -> None:
    clock = [1000.0]
    source = SyntheticSource(30, 4, rng=random.Random(3), clock=lambda: clock[0], churn_every=0.5)
    source.start()
    surface = pygame.Surface((480, 300))
    scene, renderer = Scene(), Renderer()
    recorder = GifRecorder(tmp_path / "out" / "run.gif", record_every=0.5, frame_ms=80)
    for frame in range(30 * 12):  # 12 simulated seconds at 30 fps, no sleeping
        clock[0] += 1 / 30
        if frame % 8 == 0:
            scene.update(source.view())
        scene.step(1 / 30)
        renderer.draw(surface, scene, now=clock[0])
        recorder.offer(surface, frame / 30)
    path = recorder.save()
    assert path == tmp_path / "out" / "run.gif" and path.stat().st_size > 0
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == recorder.frame_count >= 20
    assert frames.shape[1:3] == (300, 480)
    distinct = {frames[i].tobytes() for i in range(frames.shape[0])}
    assert len(distinct) >= frames.shape[0] - 2  # the picture keeps changing
    assert not np.array_equal(frames[0], frames[-1])
    assert iio.immeta(path).get("loop") == 0


def test_decimation_keeps_memory_bounded_and_spacing_even() -> None:
    surface = pygame.Surface((64, 48))
    recorder = GifRecorder("unused.gif", record_every=1.0, max_frames=10)
    kept = 0
    for t in range(100):
        surface.fill((t, 0, 0))
        kept += recorder.offer(surface, float(t))
    assert kept > recorder.frame_count  # older frames were thinned out
    assert 5 <= recorder.frame_count < 10
    assert recorder.record_every >= 8.0


def test_downscaled_frames_and_empty_recording(tmp_path: Path) -> None:
    surface = pygame.Surface((200, 100))
    surface.fill((10, 200, 30))
    recorder = GifRecorder(tmp_path / "small.gif", scale=0.5)
    assert recorder.save() is None and not (tmp_path / "small.gif").exists()
    recorder.capture(surface)
    surface.fill((200, 10, 30))
    recorder.capture(surface)
    recorder.capture(surface)  # Pillow merges an unchanged frame into the previous one
    frames = iio.imread(recorder.save(), index=None)
    assert frames.shape == (2, 50, 100, 3)
    assert tuple(frames[1, 25, 50]) == pytest.approx((200, 10, 30), abs=8)


@pytest.mark.parametrize(
    "kwargs", [{"record_every": 0}, {"scale": 0}, {"scale": 2}, {"max_frames": 1}, {"frame_ms": 0}]
)
def test_bad_recorder_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GifRecorder("x.gif", **kwargs)  # type: ignore[arg-type]


def test_png_screenshot_matches_the_surface(tmp_path: Path) -> None:
    surface = pygame.Surface((120, 80))
    surface.fill((20, 30, 40))
    pygame.draw.circle(surface, (250, 100, 0), (60, 40), 20)
    path = save_png(surface, tmp_path / "deep" / "shot.png")
    assert np.array_equal(iio.imread(path), surface_to_array(surface))
