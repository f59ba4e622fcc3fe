"""``mycelium bench identity``: what nodes speaking as themselves cost, on vs off in one run.

Gossip: ``--gossip-nodes`` ZeroMQ nodes in this process, open vs each with its own CURVE key and
ticket (a CA in memory), for ``--seconds`` each: messages per node per second, and the CPU time
this process spent per message; then one sender floods one receiver for the largest rate a node
takes in. Flower: ``bench rounds``' Mycelium group, without and with a token (enrolment, mutual
TLS, leases): median seconds per round.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cli.main import bench

TOKEN = "bench-identity-token"


def _cluster(count: int, identity: bool) -> list[Any]:
    from mycelium_p2p.config import GossipConfig
    from mycelium_p2p.groups import GossipNode
    from mycelium_p2p.identity import CertificateAuthority, NodeIdentity

    ca = CertificateAuthority.create()
    nodes = []
    for i in range(count):
        own = None
        if identity:
            own = NodeIdentity(f"b{i:03d}")
            own.accept(ca.cert_pem, ca.issue_ticket(own.node_id, own.keys.curve_public).text())
        node = GossipNode(f"b{i:03d}", GossipConfig.lan(), meta={"name": f"b{i}"}, identity=own)
        node.start()
        nodes.append(node)
    for node in nodes[1:]:
        if not node.join([nodes[0].address], 10.0):
            raise click.ClickException("a gossip node could not join")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(len([m for m in n.members() if m.status == "alive"]) == count for n in nodes):
            return nodes
        time.sleep(0.1)
    raise click.ClickException("the gossip nodes did not converge within 60 s")


def gossip_rate(count: int, seconds: float, identity: bool) -> dict[str, float]:
    """Steady gossip of ``count`` nodes: messages per node per second and CPU µs per message."""
    nodes = _cluster(count, identity)
    try:
        before = sum(n.stats()["frames_in"] for n in nodes)
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(seconds)
        frames = sum(n.stats()["frames_in"] for n in nodes) - before
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        for n in nodes:
            n.stop()
    return {
        "msgs_per_node_s": frames / count / wall,
        "cpu_us_per_msg": 1e6 * cpu / max(1, frames),
    }


def flood_rate(frames: int, identity: bool) -> float:
    """Frames per second one node takes in when another sends ``frames`` gossip frames."""
    from mycelium_p2p.gossip.messages import Gossip, Kind, Message

    a, b = _cluster(2, identity)
    try:
        codec = b._node()._core.codec
        frame = codec.encode(Message(Kind.GOSSIP, b.node_id, str(b.address), Gossip(())))
        transport = b._node().transport
        before = a.stats()["frames_in"]
        start = time.monotonic()
        sent = 0
        while sent < frames:
            sent += sum(
                1
                for _ in range(100)
                if b._node().call(lambda c, n: transport.send(a.address, frame))
            )
        deadline = time.monotonic() + 30
        while a.stats()["frames_in"] - before < frames * 0.95 and time.monotonic() < deadline:
            time.sleep(0.01)
        got = a.stats()["frames_in"] - before
        return got / (time.monotonic() - start)
    finally:
        a.stop()
        b.stop()


@bench.command("identity")
@click.option("--nodes", type=click.IntRange(1, 16), default=3, show_default=True)
@click.option("--rounds", type=click.IntRange(2, 200), default=15, show_default=True)
@click.option("--gossip-nodes", type=click.IntRange(2, 100), default=10, show_default=True)
@click.option("--seconds", type=click.FloatRange(1, 600), default=10.0, show_default=True)
@click.option("--flood", type=click.IntRange(100, 10**6), default=5000, show_default=True)
@click.option("--data", default="digits:iid", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results here.")
def bench_identity(
    nodes: int,
    rounds: int,
    gossip_nodes: int,
    seconds: float,
    flood: int,
    data: str,
    json_path: str | None,
) -> None:
    """Gossip msgs/s/node and Flower s/round with identity off and on, and their ratios."""
    from cli.bench_rounds import mycelium_seconds_per_round
    from mycelium_p2p.learning.data import load_node_data

    result: dict[str, Any] = {}
    for label, on in (("off", False), ("on", True)):
        rate = gossip_rate(gossip_nodes, seconds, on)
        result[f"gossip_{label}"] = {**rate, "flood_msgs_per_s": flood_rate(flood, on)}
        click.echo(f"gossip, identity {label}: {result[f'gossip_{label}']}", err=True)
    datas = [load_node_data(data, i, nodes, seed=0) for i in range(nodes)]
    for label, token in (("off", None), ("on", TOKEN)):
        gaps, _ = mycelium_seconds_per_round(datas, rounds, token=token, evaluation_interval=5.0)
        result[f"flower_{label}_s_per_round"] = statistics.median(gaps)
        click.echo(f"Flower, identity {label}: {statistics.median(gaps):.4f} s/round", err=True)
    off, on = result["gossip_off"], result["gossip_on"]
    result["ratios"] = {
        "gossip_msgs_per_node_s": on["msgs_per_node_s"] / off["msgs_per_node_s"],
        "gossip_cpu_per_msg": on["cpu_us_per_msg"] / off["cpu_us_per_msg"],
        "gossip_flood": on["flood_msgs_per_s"] / off["flood_msgs_per_s"],
        "flower_s_per_round": result["flower_on_s_per_round"] / result["flower_off_s_per_round"],
    }
    table = Table(title="identity off vs on")
    for column in ("measure", "off", "on", "on / off"):
        table.add_column(column)
    rows = [
        ("gossip msgs/node/s", off["msgs_per_node_s"], on["msgs_per_node_s"]),
        ("gossip CPU µs/msg", off["cpu_us_per_msg"], on["cpu_us_per_msg"]),
        ("gossip flood msgs/s", off["flood_msgs_per_s"], on["flood_msgs_per_s"]),
        ("Flower s/round", result["flower_off_s_per_round"], result["flower_on_s_per_round"]),
    ]
    for name, a, b in rows:
        table.add_row(name, f"{a:.4g}", f"{b:.4g}", f"{b / a:.2f}")
    Console().print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
