"""Heartbeats: liveness and the group's latest figures to the registry, answers as events.

One heartbeat reads what the control thread published (never its state), sends it, and posts
what the registry said. The daemon runs ``beat`` on a thread of its own every heartbeat interval
(so that a slow control step never makes the registry think the node dead); the in-memory
network runs it on its fake clock.

A metric the registry will not take must not cost the node its liveness: figures out of the
shared bounds are never sent, and a heartbeat refused for a field (400) goes again at once
without the fields the registry named (or any).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mycelium_p2p import limits
from mycelium_p2p.node.events import Event, HeartbeatAnswered, RegistryForgot
from mycelium_p2p.node.parts import discovery
from mycelium_p2p.node.ports import RegistryPort
from mycelium_p2p.node.state import Published
from mycelium_p2p.registry_client import RegistryError, RegistryUnavailable

log = logging.getLogger("mycelium.node")

_CHECKS: dict[str, Callable[[object], bool]] = {
    "accuracy": limits.is_accuracy,
    "loss": limits.is_loss,
    "round": limits.is_counter,
}


def valid_metrics(published: Published) -> dict[str, Any]:
    """The published figures that are set and within the shared bounds (``limits.py``)."""
    figures = {"accuracy": published.accuracy, "loss": published.loss, "round": published.round}
    return {k: v for k, v in figures.items() if v is not None and _CHECKS[k](v)}


class Heartbeats:
    """Sends one heartbeat at a time for one node.

    Parameters
    ----------
    registry : RegistryPort
        A registry port of its own (not the control thread's).
    node_id, name : str
        Whose heartbeat, and the name for the log.
    published : callable
        Returns the control thread's latest ``Published`` values.
    post : callable
        Hands an event to the control thread.
    """

    def __init__(
        self,
        registry: RegistryPort,
        node_id: str,
        name: str,
        published: Callable[[], Published],
        post: Callable[[Event], None],
    ) -> None:
        self.registry = registry
        self.node_id = node_id
        self.name = name
        self._published = published
        self._post = post

    def beat(self) -> None:
        """Send one heartbeat and post what the registry answered."""
        published = self._published()
        metrics = valid_metrics(published)
        try:
            try:
                answer = self._send(metrics)
            except RegistryError as exc:
                if exc.status != 400 or not metrics:
                    raise
                refused = [f for f in exc.fields if f in metrics] or list(metrics)
                log.warning(
                    "%s: registry refused heartbeat metrics %s (%s); sending it without them",
                    self.name,
                    ", ".join(refused),
                    exc.detail,
                )
                answer = self._send({k: v for k, v in metrics.items() if k not in refused})
        except RegistryUnavailable:
            return
        except RegistryError as exc:
            if exc.status == 404:  # the registry forgot us (expired, or a new file)
                self._post(RegistryForgot())
            else:
                log.warning("%s: registry refused the heartbeat: %s", self.name, exc)
            return
        peers = tuple(answer.peers[: discovery.PEERS_PER_LOOKUP])  # a registry's word, bounded
        self._post(HeartbeatAnswered(published.epoch, answer.group, peers))

    def _send(self, metrics: dict[str, Any]) -> Any:
        return self.registry.heartbeat(
            self.node_id,
            accuracy=metrics.get("accuracy"),
            loss=metrics.get("loss"),
            round=metrics.get("round"),
        )

    def close(self) -> None:
        self.registry.close()
