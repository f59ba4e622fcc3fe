"""Record the viewer: decimated frames to an animated GIF, and PNG screenshots.

Frames are captured with ``pygame.image.tobytes`` and kept zlib-compressed in memory (a
flat-colour UI frame shrinks 20-50x), at most ``max_frames`` of them: when the cap is reached
every other frame is dropped and the capture interval doubles, so a recording of any length stays
bounded in memory and on disk while still covering the whole run at an even pace.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pygame
from PIL import Image

GIF_COLOURS = 128  # palette size per frame


def surface_to_array(surface: pygame.Surface, scale: float = 1.0) -> np.ndarray:
    """The surface's pixels as an ``(height, width, 3)`` uint8 array, optionally downscaled."""
    if scale != 1.0:
        w, h = surface.get_size()
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        if surface.get_bitsize() not in (24, 32):  # smoothscale needs 24/32-bit pixels
            copy = pygame.Surface(surface.get_size(), 0, 32)
            copy.blit(surface, (0, 0))
            surface = copy
        surface = pygame.transform.smoothscale(surface, size)
    w, h = surface.get_size()
    raw = pygame.image.tobytes(surface, "RGB")
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)


def save_png(surface: pygame.Surface, path: str | Path) -> Path:
    """Write a PNG screenshot of ``surface`` (parent folders are created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, surface_to_array(surface))
    return out


class GifRecorder:
    """Collects decimated frames of a surface and writes them as one animated GIF.

    Parameters
    ----------
    path : str or Path
        Where the GIF goes; the final PNG goes next to it (same name, ``.png``).
    record_every : float
        Seconds of run time between two kept frames (default: 0.5).
    frame_ms : int
        Display time of one GIF frame in milliseconds (default: 100, so 0.5 s steps play 5x fast).
    scale : float
        Downscale factor applied before storing, in (0, 1] (default: 1.0).
    max_frames : int
        Memory and size cap; reaching it halves the kept frames and doubles ``record_every``
        (default: 300).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        record_every: float = 0.5,
        frame_ms: int = 100,
        scale: float = 1.0,
        max_frames: int = 300,
    ) -> None:
        if record_every <= 0:
            raise ValueError(f"record_every must be > 0 seconds, got {record_every}")
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, got {max_frames}")
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be > 0, got {frame_ms}")
        self.path = Path(path)
        self.record_every = record_every
        self.frame_ms = frame_ms
        self.scale = scale
        self.max_frames = max_frames
        self._frames: list[tuple[tuple[int, int], bytes]] = []
        self._next_t: float | None = None

    @property
    def frame_count(self) -> int:
        """Frames kept so far."""
        return len(self._frames)

    def offer(self, surface: pygame.Surface, t: float) -> bool:
        """Keep a frame of ``surface`` if ``t`` (run time, seconds) is due; return whether kept."""
        if self._next_t is not None and t < self._next_t:
            return False
        self.capture(surface)
        self._next_t = t + self.record_every
        return True

    def capture(self, surface: pygame.Surface) -> None:
        """Keep a frame of ``surface`` now, decimating if the cap is reached."""
        frame = surface_to_array(surface, self.scale)
        self._frames.append((frame.shape[:2], zlib.compress(frame.tobytes(), 1)))
        if len(self._frames) >= self.max_frames:
            self._frames = self._frames[::2]
            self.record_every *= 2

    def save(self) -> Path | None:
        """Write the GIF (``None`` if no frame was kept). Frames of another size are resized."""
        if not self._frames:
            return None
        (h, w), _ = self._frames[-1]

        def images() -> Iterator[Image.Image]:
            for (fh, fw), data in self._frames:
                img = Image.frombytes("RGB", (fw, fh), zlib.decompress(data))
                if (fh, fw) != (h, w):  # the window was resized mid-run
                    img = img.resize((w, h))
                # fast octree quantisation: ~3x quicker than Pillow's default median cut, and a
                # flat-colour UI needs far fewer than 256 colours
                yield img.quantize(GIF_COLOURS, method=Image.Quantize.FASTOCTREE)

        # Pillow directly rather than imageio.v3.imwrite: imwrite stacks every frame as one RGB
        # array first (hundreds of MB for a long run); Pillow takes the frames one at a time and
        # keeps them as 1-byte palette images.
        frames = images()
        first = next(frames)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        first.save(
            self.path,
            format="GIF",
            save_all=True,
            append_images=frames,
            duration=self.frame_ms,
            loop=0,
        )
        return self.path
