"""The node: decision parts behind ports, one control thread, and the daemon that wires them."""

from mycelium_p2p.node.daemon import Node

__all__ = ["Node"]
