"""The viewer's run loop, headless: recording, stopping, and surviving a failing source."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import imageio.v3 as iio
import pytest

from viz.app import ViewerError, parse_size, run_viewer
from viz.scene import NetworkView
from viz.sources import SourceError, SyntheticSource


@pytest.fixture(autouse=True)
def headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


class Tracked:
    """Wraps a source; counts calls; can stop the viewer or fail after some views."""

    def __init__(self, inner: object, stop_after: int | None = None, fail: bool = False) -> None:
        self.inner = inner
        self.started = self.closed = False
        self.views = 0
        self.stop_after = stop_after
        self.fail = fail
        self.stop = threading.Event()

    def start(self) -> None:
        self.started = True
        self.inner.start()  # type: ignore[attr-defined]

    def view(self) -> NetworkView:
        self.views += 1
        if self.stop_after is not None and self.views >= self.stop_after:
            self.stop.set()
        if self.fail and self.views > 1:
            raise RuntimeError("the network went away")
        return self.inner.view()  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self.closed = True


@pytest.mark.slow
def test_run_viewer_records_a_gif_and_a_png(tmp_path: Path) -> None:
    source = Tracked(SyntheticSource(40, 5, rng=random.Random(1), churn_every=0.3))
    gif = tmp_path / "rec" / "viz.gif"
    result = run_viewer(
        source, duration=2.5, record=gif, headless=True, fps=30, record_every=0.1, poll_every=0.1
    )
    assert source.started and source.closed and source.views >= 5
    assert result.frames >= 10 and result.draw_ms_mean > 0
    assert result.gif == gif and result.png == gif.with_suffix(".png")
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] >= 8 and frames.shape[1:] == (600, 960, 3)
    assert len({f.tobytes() for f in frames}) >= 8
    assert iio.imread(result.png).shape == (600, 960, 3)


def test_stop_event_ends_the_viewer_and_closes_the_source() -> None:
    source = Tracked(SyntheticSource(10, 2, rng=random.Random(2)), stop_after=3)
    result = run_viewer(source, headless=True, stop_event=source.stop, poll_every=0.0, fps=120)
    assert source.stop.is_set() and source.closed and result.gif is None
    assert 3 <= source.views <= 5


def test_a_failing_source_shows_in_the_ticker_and_does_not_crash() -> None:
    source = Tracked(SyntheticSource(10, 2, rng=random.Random(2)), stop_after=4, fail=True)
    result = run_viewer(
        source, headless=True, stop_event=source.stop, poll_every=0.0, fps=120, size=(640, 400)
    )
    assert result.frames >= 3 and source.closed


def test_a_source_that_cannot_start_opens_no_window() -> None:
    class Broken(Tracked):
        def start(self) -> None:
            raise SourceError("registry http://127.0.0.1:9 unreachable")

    source = Broken(None)
    with pytest.raises(SourceError, match="unreachable"):
        run_viewer(source, headless=True, duration=1.0)
    assert not source.closed  # never started, nothing to close


def test_parse_size() -> None:
    assert parse_size("960x600") == (960, 600)
    assert parse_size("1920X1080") == (1920, 1080)
    for bad in ("960", "x600", "960x", "axb", "10x10", "-960x600", "99999x600", "960x600x3"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError, match="fps"):
        run_viewer(Tracked(None), fps=0, headless=True)


def test_no_display_is_a_clear_error_and_the_source_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "no-such-driver")
    source = Tracked(SyntheticSource(4, 2, rng=random.Random(0)))
    with pytest.raises(ViewerError, match="--headless"):
        run_viewer(source, duration=1.0)
    assert source.started and source.closed
