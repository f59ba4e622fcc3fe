"""The viewer's run loop: poll a source, animate the scene, draw, record, handle keys.

Keys: ``s`` saves a PNG screenshot, ``q`` or Escape quits. The window is resizable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from viz.recorder import GifRecorder, save_png
from viz.scene import NetworkView, Scene, ViewEvent
from viz.sources import Source

log = logging.getLogger(__name__)


class ViewerError(RuntimeError):
    """The viewer itself cannot run (e.g. no display); the message says what to do."""


@dataclass
class ViewerResult:
    """What a run produced: frame count and timing, and the files written."""

    frames: int = 0
    seconds: float = 0.0
    draw_ms_mean: float = 0.0
    draw_ms_p95: float = 0.0
    gif: Path | None = None
    png: Path | None = None
    gif_frames: int = 0
    screenshots: list[Path] = field(default_factory=list)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``960x600``) into a size; raise ``ValueError`` with the reason."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size must look like 960x600, got {text!r}")
    w, h = int(parts[0]), int(parts[1])
    if not (320 <= w <= 7680 and 240 <= h <= 4320):
        raise ValueError(f"size {w}x{h} out of range (320x240 to 7680x4320)")
    return w, h


def run_viewer(
    source: Source,
    *,
    duration: float | None = None,
    record: str | Path | None = None,
    headless: bool = False,
    fps: int = 30,
    size: tuple[int, int] = (960, 600),
    stop_event: threading.Event | None = None,
    record_every: float = 0.5,
    record_scale: float = 1.0,
    poll_every: float = 0.25,
    screenshot_dir: str | Path | None = None,
) -> ViewerResult:
    """Show ``source`` in a pygame window until closed, ``duration`` s or ``stop_event``.

    Parameters
    ----------
    source : Source
        Started here and closed at the end; :class:`viz.sources.SourceError` from its
        ``start()`` propagates before any window opens.
    duration : float or None
        Seconds to run (default: until the window is closed).
    record : path or None
        Animated GIF to write at the end, with a PNG of the last frame next to it (default: none).
    headless : bool
        Draw off-screen (``SDL_VIDEODRIVER=dummy``), e.g. in CI (default: False).
    fps : int
        Frame-rate cap (default: 30).
    size : (int, int)
        Initial window size in pixels (default: 960x600).
    stop_event : threading.Event or None
        Set it from another thread to stop the viewer (default: none).
    record_every : float
        Seconds between two GIF frames (default: 0.5); see :class:`viz.recorder.GifRecorder`.
    record_scale : float
        GIF downscale factor in (0, 1] (default: 1.0).
    poll_every : float
        Seconds between two ``source.view()`` calls (default: 0.25).
    screenshot_dir : path or None
        Where ``s`` saves PNGs (default: next to the GIF, else the current directory).
    """
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    if headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame  # after the environment is set: SDL reads it at init

    from viz.render import Renderer

    recorder = (
        GifRecorder(record, record_every=record_every, scale=record_scale) if record else None
    )
    shots_dir = (
        Path(screenshot_dir) if screenshot_dir else (Path(record).parent if record else Path())
    )
    result = ViewerResult()
    source.start()
    try:
        try:
            pygame.display.init()
            pygame.font.init()
            screen = pygame.display.set_mode(size, pygame.RESIZABLE)
        except pygame.error as exc:
            raise ViewerError(f"cannot open a window ({exc}); try --headless") from exc
        pygame.display.set_caption("Mycelium")
        scene = Scene()
        renderer = Renderer()
        clock = pygame.time.Clock()
        draw_ms: list[float] = []
        start = last = time.monotonic()
        next_poll = start
        running = True
        while running:
            now_m = time.monotonic()
            if duration is not None and now_m - start >= duration:
                break
            if stop_event is not None and stop_event.is_set():
                break
            for event in pygame.event.get():
                if event.type == pygame.QUIT or (
                    event.type == pygame.KEYDOWN and event.key in (pygame.K_q, pygame.K_ESCAPE)
                ):
                    running = False
                elif event.type == pygame.KEYDOWN and event.key == pygame.K_s:
                    path = shots_dir / time.strftime("mycelium_%Y%m%d_%H%M%S.png")
                    result.screenshots.append(save_png(screen, path))
                    log.info("screenshot saved to %s", path)
            if now_m >= next_poll:
                next_poll = now_m + poll_every
                scene.update(_safe_view(source, scene))
            screen = pygame.display.get_surface()  # a resize gives a new surface
            scene.step(now_m - last)
            last = now_m
            t_draw = time.perf_counter()
            renderer.draw(screen, scene, now=time.time())
            draw_ms.append((time.perf_counter() - t_draw) * 1000.0)
            pygame.display.flip()
            if recorder is not None:
                recorder.offer(screen, now_m - start)
            result.frames += 1
            clock.tick(fps)
        result.seconds = time.monotonic() - start
        if draw_ms:
            ordered = sorted(draw_ms)
            result.draw_ms_mean = sum(ordered) / len(ordered)
            result.draw_ms_p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        if recorder is not None:
            recorder.capture(screen)  # the final state is always in the GIF
            result.gif_frames = recorder.frame_count
            result.gif = recorder.save()
            result.png = save_png(screen, Path(record).with_suffix(".png"))  # type: ignore[arg-type]
    finally:
        source.close()
        pygame.display.quit()
        pygame.font.quit()
    return result


def _safe_view(source: Source, scene: Scene) -> NetworkView:
    """The source's view; a failing source shows as a ticker line, never as a crash."""
    try:
        return source.view()
    except Exception as exc:
        log.warning("viewer source failed: %s", exc)
        prev = scene.view
        now = time.time()
        err = ViewEvent(now, "error", f"source error: {exc}"[:120])
        if prev is None:
            return NetworkView(now, events=(err,))
        return NetworkView(now, prev.nodes, prev.groups, prev.stats, (*prev.events, err))
