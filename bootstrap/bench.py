"""The registry benchmark: requests/s and latency under 1..N concurrent clients.

The server runs in its own process (``python -m bootstrap.bench serve ...``) so that the load
generator does not share its GIL. A plain Litestar app answering ``GET /groups`` from memory is
measured in the same run as the baseline: the ratio shows what the database and validation cost.
Only loopback is ever targeted.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = dict[str, Any]


# ---- server side ----------------------------------------------------------------------------


def baseline_app() -> Any:
    """A plain Litestar app: ``GET /groups`` returns two fixed groups, no database."""
    from litestar import Litestar, get

    groups = [
        {
            "id": f"g-{i}",
            "name": f"group {i}",
            "leader": "n-0",
            "term": 1,
            "members": [f"n-{j}" for j in range(32)],
            "capacity": 10_000,
            "metrics": {"accuracy": 0.9, "loss": 0.3, "round": 7, "examples": 100},
        }
        for i in range(2)
    ]

    @get("/groups", sync_to_thread=False)
    def list_groups() -> list[dict[str, Any]]:
        return groups

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([list_groups, health])


def serve(kind: str, db: str, suspect_after: float = 3600, dead_after: float = 7200) -> None:
    """Serve ``kind`` ("registry" or "baseline") on a free loopback port; print ``READY url``.

    (Nodes of the request benchmark do not all heartbeat: by default they expire after hours.)
    """
    import uvicorn

    from bootstrap.server import bound_port

    if kind == "registry":
        from bootstrap.app import create_app
        from bootstrap.store import LivenessConfig

        liveness = LivenessConfig(suspect_after=suspect_after, dead_after=dead_after)
        app = create_app(db, liveness=liveness)
    else:
        app = baseline_app()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        print(f"READY http://127.0.0.1:{bound_port(server)}", flush=True)
        await task

    asyncio.run(main())


# ---- client side ----------------------------------------------------------------------------


class _Server:
    """A benchmark server subprocess."""

    def __init__(
        self, kind: str, db: str | Path, liveness: tuple[float, float] | None = None
    ) -> None:
        cmd = [sys.executable, "-u", "-m", "bootstrap.bench", "serve", "--kind", kind, "--db"]
        cmd.append(str(db))
        if liveness is not None:
            cmd += ["--suspect-after", str(liveness[0]), "--dead-after", str(liveness[1])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        url = line.split()[1]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> int:
    payload = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


Request = Callable[[int, int], tuple[str, str, Any]]


def measure(host: str, port: int, clients: int, total: int, make: Request) -> Run:
    """Send ``total`` requests from ``clients`` threads with keep-alive connections.

    ``make(client, k)`` gives the k-th request of a client as ``(method, path, body)``.
    Every answer must be 2xx, or the run fails.
    """
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            start_gate.wait()
            for k in range(per_client[index]):
                method, path, body = make(index, k)
                t0 = time.perf_counter()
                status = _call(conn, method, path, body)
                latencies[index].append(time.perf_counter() - t0)
                if status >= 300:
                    errors.append(f"{method} {path} -> {status}")
                    return
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"benchmark request failed: {errors[0]}")
    flat = sorted(x for lat in latencies for x in lat)
    return {
        "clients": clients,
        "requests": len(flat),
        "requests_per_s": len(flat) / elapsed,
        "p50_ms": 1000 * statistics.median(flat),
        "p99_ms": 1000 * flat[min(len(flat) - 1, int(0.99 * len(flat)))],
    }


def _setup_registry(host: str, port: int, nodes: int) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        for i in range(nodes + 2):
            body = {
                "id": f"b{i}",
                "name": f"bench {i}",
                "gossip_address": f"127.0.0.1:{20000 + i}",
                "model": "mlp:1x8x8:10",
            }
            assert _call(conn, "POST", "/nodes/register", body) == 200
        for g, leader in (("A", nodes), ("B", nodes + 1)):
            body = {
                "id": f"bench-{g}",
                "name": g,
                "leader": f"b{leader}",
                "flower_address": "127.0.0.1:1",
                "model": "mlp:1x8x8:10",
                "capacity": 10_000,
            }
            assert _call(conn, "POST", "/groups", body) == 201
    finally:
        conn.close()


def run_benchmark(
    levels: list[int], requests: int, progress: Callable[[str], None] = lambda _m: None
) -> list[Run]:
    """Measure the baseline and the registry; return the runs (one per endpoint and level).

    Both servers run at once and each client level measures the baseline right before the
    registry's endpoints, so that a change in the machine's load during the run (it is shared)
    shifts both sides of a ratio alike. Rows come out grouped by endpoint, as before.
    """
    with tempfile.TemporaryDirectory(prefix="mycelium-bench-") as tmp:
        warm = min(200, requests)
        baseline = _Server("baseline", Path(tmp) / "unused.db")
        try:
            registry = _Server("registry", Path(tmp) / "registry.db")
        except BaseException:
            baseline.stop()
            raise
        try:
            _setup_registry(registry.host, registry.port, max(levels))

            def get_groups(_c: int, _k: int) -> tuple[str, str, Any]:
                return "GET", "/groups", None

            def heartbeat(c: int, k: int) -> tuple[str, str, Any]:
                return "POST", f"/nodes/b{c}/heartbeat", {"accuracy": 0.5, "loss": 0.7, "round": k}

            def join(c: int, k: int) -> tuple[str, str, Any]:
                # Alternate groups so that every join is a migration and no group fills up.
                group = "bench-A" if k % 2 == 0 else "bench-B"
                return "POST", "/groups/join", {"node_id": f"b{c}", "group_id": group}

            measure(baseline.host, baseline.port, 1, warm, get_groups)
            measure(registry.host, registry.port, 1, warm, get_groups)
            cases: list[tuple[str, _Server, Request]] = [
                ("GET /groups (no database, baseline)", baseline, get_groups),
                ("GET /groups", registry, get_groups),
                ("POST /nodes/{id}/heartbeat", registry, heartbeat),
                ("POST /groups/join", registry, join),
            ]
            by_case: dict[str, list[Run]] = {name: [] for name, _s, _m in cases}
            for clients in levels:
                for name, server, make in cases:
                    progress(f"{name}, {clients} clients")
                    run = measure(server.host, server.port, clients, requests, make)
                    by_case[name].append({"endpoint": name, **run})
        finally:
            registry.stop()
            baseline.stop()
    return [run for name, _s, _m in cases for run in by_case[name]]


def _main() -> None:
    parser = argparse.ArgumentParser(description="benchmark server (used by bench registry)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--kind", choices=["registry", "baseline"], required=True)
    p_serve.add_argument("--db", required=True)
    p_serve.add_argument("--suspect-after", type=float, default=3600.0)
    p_serve.add_argument("--dead-after", type=float, default=7200.0)
    args = parser.parse_args()
    serve(args.kind, args.db, args.suspect_after, args.dead_after)


if __name__ == "__main__":
    _main()
