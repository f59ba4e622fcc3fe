"""Run one gossip node until SIGTERM/SIGINT (graceful leave); print its address as JSON.

``python -m mycelium_p2p.gossip --id a1 [--seed HOST:PORT] [--secret S] [--preset test]``
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.groups import GossipNode


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the node, leave gracefully on a signal; 0 on a clean exit."""
    p = argparse.ArgumentParser(prog="python -m mycelium_p2p.gossip")
    p.add_argument("--id", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", action="append", default=[])
    p.add_argument("--secret", default=None)
    p.add_argument("--preset", choices=["lan", "local", "test"], default="local")
    p.add_argument("--group", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = getattr(GossipConfig, args.preset)()
    node = GossipNode(
        args.id, config, args.host, args.port, meta={"group": args.group}, secret=args.secret
    )
    node.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    joined = node.join(args.seed, timeout=5.0) if args.seed else True
    print(json.dumps({"id": args.id, "address": node.address, "joined": joined}), flush=True)
    done.wait()
    node.leave(timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
