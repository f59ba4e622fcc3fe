"""``mycelium viz`` (the live viewer) and ``mycelium bench viz`` (its cost per frame)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import click
from rich.table import Table

from cli.common import read_token, registry_base, registry_from_env, registry_option, token_options
from cli.main import bench, main
from cli.output import Results, json_options, steps

# pygame prints a banner on import; the command's output should stay clean
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    from viz.app import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command("viz")
@registry_option("Registry URL to start from.")
@click.option(
    "--peer", "peers", multiple=True, metavar="HOST:PORT", help="Gossip address of any node."
)
@click.option(
    "--simulate",
    type=click.IntRange(1, 500),
    metavar="N",
    help="Show a simulated network of N nodes instead (no network needed).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write an animated GIF here at the end (and a PNG next to it).",
)
@click.option(
    "--record-every",
    type=click.FloatRange(min=0.05),
    default=0.5,
    show_default=True,
    help="Seconds between two GIF frames.",
)
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), help="Seconds to run, then stop."
)
@click.option("--headless", is_flag=True, help="No window (SDL dummy driver), e.g. to record.")
@click.option("--fps", type=click.IntRange(1, 240), default=30, show_default=True)
@click.option(
    "--size", default="960x600", show_default=True, callback=_size, help="Window size WxH."
)
@token_options("Network secret (registry token and gossip keys).")
@click.pass_context
def viz(
    ctx: click.Context,
    registry_url: str | None,
    peers: tuple[str, ...],
    simulate: int | None,
    record: Path | None,
    record_every: float,
    duration: float | None,
    headless: bool,
    fps: int,
    size: tuple[int, int],
    token: str | None,
    token_file: Path | None,
) -> None:
    """Watch a running network live: topology, accuracy, statistics and events.

    Attaches as a gossip observer through --peer or through the registry (--bootstrap), which
    is asked once for a snapshot at start. Keys: s saves a screenshot, q quits.
    """
    from viz.app import ViewerError, run_viewer
    from viz.sources import GossipSource, Source, SourceError, SyntheticSource

    token = read_token(ctx, token, token_file)
    registry_url = registry_url or registry_from_env()
    if registry_url:
        registry_url = registry_base(registry_url)
    if not registry_url and not peers and simulate is None:
        raise click.UsageError("give --bootstrap URL or --peer HOST:PORT (or --simulate N)")
    for peer in peers:
        host, _, port = peer.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(f"{peer!r} is not HOST:PORT", param_hint="--peer")
    source: Source
    if simulate is not None:
        source = SyntheticSource(simulate, max(2, simulate // 5), rng=random.Random(0))
    else:
        source = GossipSource(list(peers), registry_url, token=token)
    try:
        result = run_viewer(
            source,
            duration=duration,
            record=record,
            headless=headless,
            fps=fps,
            size=size,
            record_every=record_every,
        )
    except (SourceError, ViewerError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    click.echo(
        f"{result.frames} frames in {result.seconds:.1f} s, "
        f"drawing {result.draw_ms_mean:.2f} ms/frame (p95 {result.draw_ms_p95:.2f})"
    )
    if result.gif is not None:
        click.echo(f"GIF: {result.gif} ({result.gif_frames} frames); PNG: {result.png}")
    for shot in result.screenshots:
        click.echo(f"screenshot: {shot}")


@bench.command("viz")
@click.option(
    "--nodes",
    "node_counts",
    default="25,100,200",
    show_default=True,
    help="Comma-separated network sizes.",
)
@click.option("--frames", type=click.IntRange(10, 100_000), default=300, show_default=True)
@json_options
def bench_viz(
    node_counts: str, frames: int, json_target: str | None, output_path: Path | None
) -> None:
    """Milliseconds per frame of the viewer (scene + drawing, capture apart), off-screen."""
    from viz.bench import measure_frames

    try:
        counts = [int(c) for c in node_counts.split(",") if c.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"not a list of integers: {node_counts!r}") from exc
    if not counts or any(c < 1 or c > 2000 for c in counts):
        raise click.BadParameter("sizes must be between 1 and 2000", param_hint="--nodes")
    results_to = Results.chosen(json_target, output_path)
    runs = []
    with steps("viewer", len(counts)) as step:
        for n in counts:
            step(f"{n} nodes")
            runs.append(measure_frames(n, max(2, n // 5), frames))
    table = Table(title=f"viewer cost per frame (960x600, {frames} frames, off-screen)")
    for col in ("nodes", "groups", "frame ms", "p95 ms", "draw ms", "capture ms", "max fps"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(
            str(r["nodes"]),
            str(r["groups"]),
            f"{r['frame_ms_mean']:.2f}",
            f"{r['frame_ms_p95']:.2f}",
            f"{r['draw_ms_mean']:.2f}",
            f"{r['capture_ms_mean']:.2f}",
            f"{r['max_fps']:.0f}",
        )
    results_to.show(table)
    results_to.emit({"runs": runs})
