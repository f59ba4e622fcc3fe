"""Mycelium peer: everything a node runs (gossip, group table, policy, learning, the daemon)."""

__version__ = "0.1.0"
