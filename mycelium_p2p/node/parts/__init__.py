"""The node's decision parts: each reads the node's state and the gossip view, and returns
commands for the controller to execute. A part depends on the state, the ports' read-only
queries and pure helpers, never on another part."""
