"""The registry's scale run: register many nodes, then heartbeat them all at their rate.

``mycelium bench registry --nodes 100000 --heartbeat-interval 30 --seconds 60`` starts the
registry in its own process (SQLite, or a PostgreSQL URL) and registers the nodes (with expiry
set to hours: nodes do not heartbeat while the others register), restarts it on the same
database with the limits of a real network (suspect after 1.5 intervals, dead after 3), then
drives one heartbeat per node per interval, spread evenly (N / interval requests per second),
for ``seconds``. The load comes from ``workers`` other processes, each an asyncio loop over
keep-alive connections writing requests by hand (no HTTP library in the hot loop), so that the
load generator is not what runs out. Latency is counted from each heartbeat's scheduled time
(open loop: a slow registry cannot hide queueing by slowing the generator down), and each worker
reports how far behind schedule it sent and how much CPU it used. At the end the registry's
nodes and event log are read: every node heartbeated on time, so any ``expired`` event, or any
node not ``alive`` or ``suspect``, is a wrong expiry. Only loopback is ever targeted.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL = "mlp:1x8x8:10"


# ---- one worker process ---------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; requests are written by hand."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes) -> int:
        """Send one request and read its answer; the status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _register_body(i: int) -> bytes:
    return json.dumps(
        {
            "id": f"s{i}",
            "name": f"scale {i}",
            "gossip_address": f"127.0.0.{1 + i % 250}:{20000 + i % 40000}",
            "model": MODEL,
            "data": {"train": 100},
        }
    ).encode()


async def _register(host: str, port: int, ids: list[int], connections: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in ids:
        queue.put_nowait(i)

    async def worker() -> None:
        conn = Connection(host, port)
        try:
            while not queue.empty():
                i = queue.get_nowait()
                status = await conn.request("POST", "/nodes/register", _register_body(i))
                if status != 200:
                    raise RuntimeError(f"register s{i}: HTTP {status}")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


async def _heartbeats(
    host: str,
    port: int,
    ids: list[int],
    nodes: int,
    interval: float,
    start: float,
    seconds: float,
    connections: int,
) -> dict[str, Any]:
    """Heartbeat node i at ``start + (i / nodes) * interval + k * interval`` until
    ``start + seconds``; latencies from the scheduled times."""
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    end = start + seconds
    latencies: list[float] = []
    lags: list[float] = []
    late_answers = 0
    errors: list[str] = []

    async def schedule() -> None:
        k = 0
        order = sorted(ids)
        while True:
            for i in order:
                due = start + (i / nodes) * interval + k * interval
                if due >= end:
                    for _ in range(connections):
                        queue.put_nowait(None)
                    return
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                queue.put_nowait((due, i))
            k += 1

    async def worker() -> None:
        nonlocal late_answers
        conn = Connection(host, port)
        body = b'{"accuracy": 0.5, "loss": 0.7, "round": 1}'
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, i = item
                sent = time.time()
                lags.append(sent - due)
                status = await conn.request("POST", f"/nodes/s{i}/heartbeat", body)
                done = time.time()
                if status != 200:
                    errors.append(f"heartbeat s{i}: HTTP {status}")
                    return
                if done > end:
                    late_answers += 1  # answered after the window: not counted as achieved
                else:
                    latencies.append(done - due)
        finally:
            conn.close()

    cpu0 = time.process_time()
    await asyncio.gather(schedule(), *(worker() for _ in range(connections)))
    return {
        "latencies": latencies,
        "lags": lags,
        "late": late_answers,
        "errors": errors,
        "cpu_s": time.process_time() - cpu0,
    }


def _worker(
    host: str,
    port: int,
    ids: list[int],
    nodes: int,
    interval: float,
    seconds: float,
    connections: int,
    registered: Any,
    go: Any,
    results: Any,
) -> None:
    """A load-generating process: register its nodes, wait for the start time, heartbeat."""
    try:
        try:
            asyncio.run(_register(host, port, ids, min(connections, 16)))
        except BaseException:
            registered.abort()  # the others and the parent stop waiting
            raise
        registered.wait()
        start, host, port = go.get()  # the registry was restarted: its new address
        out = asyncio.run(
            _heartbeats(host, port, ids, nodes, interval, start, seconds, connections)
        )
        results.put(out)
    except Exception as exc:  # reported by the parent
        results.put({"errors": [f"{type(exc).__name__}: {exc}"]})


# ---- the run --------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _drain(results: Any) -> list[dict[str, Any]]:
    found = []
    while True:
        try:
            found.append(results.get(timeout=1.0))
        except Exception:
            return found


def _get(conn: Any, path: str) -> Any:
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


def _statuses(host: str, port: int) -> tuple[dict[str, int], set[str]]:
    """How many nodes are in each status, and which nodes the registry expired (events)."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=300)
    try:
        counts: dict[str, int] = {}
        for node in _get(conn, "/nodes"):
            counts[node["status"]] = counts.get(node["status"], 0) + 1
        expired: set[str] = set()
        after = 0
        while True:
            page = _get(conn, f"/events?after={after}&limit=1000")
            if not page:
                return counts, expired
            expired.update(e["node"] for e in page if e["kind"] == "expired")
            after = page[-1]["id"]
    finally:
        conn.close()


def run_scale(
    nodes: int,
    interval: float,
    seconds: float,
    db: str | None = None,
    workers: int = 2,
    connections: int = 32,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The scale run; returns the ``scale`` entry of the benchmark's JSON.

    Parameters
    ----------
    nodes : int
        Nodes to register and keep alive.
    interval : float
        Seconds between two heartbeats of one node (the registry expires a node after three
        missed ones, suspects it after one and a half, as with its defaults).
    seconds : float
        Length of the heartbeat phase, in seconds.
    db : str, optional
        A PostgreSQL URL (default: None, a temporary SQLite file).
    workers : int
        Load-generating processes (default: 2).
    connections : int
        Keep-alive connections per worker (default: 32).
    """
    from bootstrap.bench import _Server

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="mycelium-scale-") as tmp:
        target = db or str(Path(tmp) / "registry.db")
        # Registering takes minutes and nodes do not heartbeat meanwhile: register with expiry
        # set to hours, then restart the registry on the same database with the real limits
        # (a restart gives every node a full interval) and heartbeat.
        server = _Server("registry", target)
        procs: list[Any] = []
        try:
            registered = ctx.Barrier(workers + 1)
            go = ctx.Queue()
            results = ctx.Queue()
            shards = [list(range(w, nodes, workers)) for w in range(workers)]
            progress(f"registering {nodes} nodes from {workers} processes")
            t0 = time.time()
            for shard in shards:
                proc = ctx.Process(
                    target=_worker,
                    args=(server.host, server.port, shard, nodes, interval, seconds, connections),
                    kwargs={"registered": registered, "go": go, "results": results},
                    daemon=True,
                )
                proc.start()
                procs.append(proc)
            try:
                registered.wait(timeout=max(600.0, nodes / 50))
            except Exception:  # a worker failed (or the registry was too slow)
                failed = [e for out in _drain(results) for e in out.get("errors", [])]
                raise RuntimeError(f"registering failed: {failed[:1] or 'timed out'}") from None
            register_s = time.time() - t0
            progress(f"registered in {register_s:.1f} s; restarting the registry")
            server.stop()
            t1 = time.time()
            server = _Server("registry", target, liveness=(1.5 * interval, 3 * interval))
            restart_s = time.time() - t1
            start = time.time() + 0.5
            cpu0 = _cpu_seconds(server.proc.pid)
            for _ in range(workers):
                go.put((start, server.host, server.port))
            progress(
                f"restarted in {restart_s:.1f} s; heartbeats at {nodes / interval:.0f}/s "
                f"for {seconds:.0f} s"
            )
            outs = [results.get(timeout=seconds + 600) for _ in range(workers)]
            registry_cpu = _cpu_seconds(server.proc.pid) - cpu0
            elapsed = time.time() - start
            errors = [e for out in outs for e in out.get("errors", [])]
            if errors:
                raise RuntimeError(f"scale run failed: {errors[0]}")
            progress("reading every node's status")
            statuses, expired = _statuses(server.host, server.port)
        finally:
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
            server.stop()
    latencies = [x for out in outs for x in out["latencies"]]
    lags = [x for out in outs for x in out["lags"]]
    live = statuses.get("alive", 0) + statuses.get("suspect", 0)
    return {
        "nodes": nodes,
        "target_per_s": nodes / interval,
        "achieved_per_s": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        # Every node heartbeated on time: any expiry, or any node not live at the end, is wrong.
        "wrongly_expired": max(len(expired), nodes - live),
        # How the run went: the generator's own lag and CPU, answers after the window.
        "register_s": register_s,
        "register_per_s": nodes / register_s,
        "restart_s": restart_s,
        "answered_late": sum(out["late"] for out in outs),
        "send_lag_p99_ms": 1000 * _percentile(lags, 0.99),
        "generator_cpu_s": [round(out["cpu_s"], 2) for out in outs],
        # The registry's CPU while heartbeats ran: 1.0 is one core fully used.
        "registry_cpu_s": round(registry_cpu, 2),
        "registry_cores_used": round(registry_cpu / elapsed, 2),
        "seconds": seconds,
        "statuses": statuses,
        "workers": workers,
        "connections": workers * connections,
        "database": "postgresql" if db else "sqlite",
        "cpus": os.cpu_count(),
    }
