"""The learning port over a node's task and Flower (the daemon's learner).

The task (``learning.task``) is what the node learns: built in (``--model``/``--data``) or the
user's own (``--task``). The local model trains on it for the policy's "alone" figure; a
`MemberClient` trains with whichever group the node follows; a `GroupServer` runs the group the
node leads. Every evaluation on the validation split (a probe of a group, the current group, the
local model) is timed. Round results arrive on the server's thread and are handed to
``on_round`` (the daemon turns them into events for the control thread).
"""

from __future__ import annotations

import collections
import logging
import math
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mycelium_p2p.identity import NodeIdentity, dns_name
from mycelium_p2p.learning import flower, models
from mycelium_p2p.learning.admission import MemberLimits
from mycelium_p2p.learning.data import NodeData
from mycelium_p2p.learning.flower import GroupServer, MemberClient, RoundResult
from mycelium_p2p.learning.task import (
    GuardedTask,
    SplitName,
    Task,
    TaskError,
    wide_probe_samples,
)
from mycelium_p2p.learning.tls import TlsMaterial
from mycelium_p2p.node.ports import RoundSummary

log = logging.getLogger("mycelium.node")

PROBES_KEPT = 32  # probe timings behind the figure a node announces
CATCH_UP_FITS = 3  # fits of the own model on new data, from each start (see train_local)


@dataclass(frozen=True)
class FlowerSettings:
    """How this node trains and serves.

    Parameters
    ----------
    strategy : str
        Aggregation of groups it leads (default: "median").
    bind_host, port : str, int
        Where its Flower server binds (defaults: "127.0.0.1", 0: any free port).
    advertised_host : str
        Host members use to reach the server (default: "127.0.0.1").
    round_timeout, round_pause : float
        Seconds a round waits for stragglers, and between rounds (defaults: 30, 1).
    seed : int
        Seed of the task's randomness in group rounds (default: 0).
    token : str | None
        A shared secret: Flower over TLS with certificates derived from it (standalone use;
        ignored with an ``identity``) (default: None: clear).
    identity : NodeIdentity | None
        The node's enrolled identity: Flower over mutual TLS with the certificate the registry
        issued it (default: None).
    """

    strategy: str = "median"
    bind_host: str = "127.0.0.1"
    port: int = 0
    advertised_host: str = "127.0.0.1"
    round_timeout: float = 30.0
    round_pause: float = 1.0
    seed: int = 0
    token: str | None = None
    identity: NodeIdentity | None = None


class _Server:
    """A `GroupServer` with its advertised address and a serialized model cached by round."""

    def __init__(
        self, server: GroupServer, address: str, on_stop: Callable[[_Server], None]
    ) -> None:
        self.group_server = server
        self._server = server
        self.address = address
        self._on_stop = on_stop
        self._lock = threading.Lock()
        self._payload: tuple[int, bytes] | None = None

    def payload(self) -> tuple[int, bytes]:
        with self._lock:
            round_ = self._server.round
            if self._payload is None or self._payload[0] != round_:
                self._payload = (round_, models.weights_to_bytes(self._server.latest_weights()))
            return self._payload

    def weights(self) -> list[np.ndarray]:
        return self._server.latest_weights()

    def running(self) -> bool:
        return self._server.running

    def num_clients(self) -> int:
        return self._server.num_clients()

    def stop(self) -> None:
        self._server.stop()
        self._on_stop(self)


class FlowerLearning:
    """The learning port of a node (see ``ports.LearningPort``).

    Parameters
    ----------
    task : Task or GuardedTask
        What the node learns (guarded here if it is not yet).
    settings : FlowerSettings
        Serving settings.
    on_round : callable
        Called with each round's summary of a group this node leads (on the server's thread).
    rng : random.Random
        Seeds of local training.
    node_id : str
        Stated in every Flower result of this node, so that a leader can hold it to its sizes.
    member_limits : callable
        For a group this node leads: a member's announced sizes, None if it is not a member.
    leader_of : callable | None
        With an identity: ``leader_of(flower_address)``, the node id of the leader of record
        serving there (from lease-checked group records), or None; a member connects only to a
        server whose certificate names it (default: None).
    admit : callable | None
        With an identity: whether a Flower session of ``node_id`` may go on (not revoked)
        (default: None).

    A `TaskError` of the task, on any thread, is kept in `failure` (the first one): the node
    stops on it. One timed evaluation of the initial parameters runs at once (the first probe
    figure; a stock NumPyClient learns its validation size from it).
    """

    def __init__(
        self,
        task: Task | GuardedTask,
        settings: FlowerSettings,
        on_round: Callable[[RoundSummary], None],
        rng: random.Random,
        node_id: str,
        member_limits: Callable[[str], MemberLimits | None],
        leader_of: Callable[[str], str | None] | None = None,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        flower.install()  # process-wide Flower settings, before any server or client exists
        self.task = task if isinstance(task, GuardedTask) else GuardedTask(task)
        self.task.on_error = self._task_failed
        self.failure: str | None = None
        self.settings = settings
        self._on_round = on_round
        self._rng = rng
        self._member_limits = member_limits
        self._local = self.task.initial_parameters()
        self._switched = False  # the data switched once: the task scores its training split
        self._behind = False  # the own model has not trained on the data switched to yet
        self._probe_seconds: collections.deque[float] = collections.deque(maxlen=PROBES_KEPT)
        self._servers: list[_Server] = []  # running, the newest last
        self._servers_lock = threading.Lock()
        self._node_id = node_id
        self._leader_of = leader_of
        self._admit = admit
        token = None if settings.identity is not None else settings.token
        self._shared_tls = (
            TlsMaterial.for_server(token, settings.advertised_host) if token else None
        )
        self.client = MemberClient(
            self.task,
            seed=settings.seed,
            tls=TlsMaterial.for_member(token) if token else None,
            node_id=node_id,
            server_name=self._server_name if settings.identity is not None else None,
        )
        self.enrolled()  # an identity from the state directory may hold its certificate
        self.round_times: list[tuple[int, float]] = []  # (round, monotonic time) while leading
        self._evaluate(self._local, "val")
        self._description = self.task.describe()

    def _task_failed(self, why: str) -> None:
        if self.failure is None:
            self.failure = why

    # -- what the node is ------------------------------------------------------------------

    @property
    def spec(self) -> str:
        return self.task.spec.key

    @property
    def val_size(self) -> int:
        val = self.task.sizes().val
        probe = self.task.probe_samples
        return val if probe is None else min(val, probe)

    def probe_ms(self) -> int:
        """Median milliseconds of the latest evaluations on the validation split, at least 1
        (0: none measured yet)."""
        times = list(self._probe_seconds)
        return max(1, math.ceil(1000 * statistics.median(times))) if times else 0

    def summary(self) -> dict[str, Any]:
        sizes = self.task.sizes()
        return {**self._description, "train": sizes.train, "val": sizes.val,
                "probe_ms": self.probe_ms()}  # fmt: skip

    def sizes(self) -> dict[str, int]:
        """``train`` and ``val`` counts and ``probe_ms``, announced in gossip metadata."""
        sizes = self.task.sizes()
        return {"train": sizes.train, "val": sizes.val, "probe_ms": self.probe_ms()}

    @property
    def data(self) -> NodeData | None:
        """The data the built-in task learns on now (None: the user's task holds its own)."""
        data = getattr(self.task.task, "data", None)
        return data if isinstance(data, NodeData) else None

    def switch_data(self, data: NodeData) -> None:
        """Train, validate and test on ``data`` from now on (same model spec): the task's data
        switches, which the member client shares. The own model catches up at the next
        `train_local` (the node can look for its new data's group first)."""
        self.task.switch_data(data)
        self._switched = True
        self._behind = True
        self._description = self.task.describe()

    def _catch_up(self) -> float:
        """The own model after the data changed: the old one and a fresh one, each fitted
        ``CATCH_UP_FITS`` times on the new data, and the better on the new validation split is
        kept (its accuracy returned). The old model can be a bad start (labels whose meaning
        changed are confidently wrong) or a good one (a small shift); with one fit per
        re-evaluation, a drifted node would judge its own model, and so whether to found, by a
        model of its old data for many intervals, training inside a group that no longer fits
        it meanwhile."""
        tried: list[tuple[float, list[np.ndarray]]] = []
        for start in (self._local, self.task.initial_parameters()):
            weights = start
            for _ in range(CATCH_UP_FITS):
                weights = self._fit_local(weights)
            tried.append((self._evaluate(weights, "val"), weights))
        accuracy, self._local = max(tried, key=lambda t: t[0])  # a tie keeps the old model
        self._behind = False
        return accuracy

    # -- scoring ---------------------------------------------------------------------------

    def local_parameters(self) -> list[np.ndarray]:
        """A copy of the node's own model, trained on its own data alone."""
        return [p.copy() for p in self._local]

    def train_local(self) -> float:
        """One more fit of the own model (after a data switch, its catch-up); its accuracy."""
        if self._behind:
            return self._catch_up()
        self._local = self._fit_local(self._local)
        return self._evaluate(self._local, "val")

    def _fit_local(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        """``weights`` fitted once on the node's own data (a fresh model if that diverged)."""
        try:
            fitted = self.task.fit(weights, {"server_round": 0, "seed": self._rng.randrange(2**31)})
        except ValueError as exc:
            if isinstance(exc, TaskError):
                raise
            log.warning("local training diverged (%s): the local model starts again", exc)
            return self.task.initial_parameters()
        return fitted.parameters

    def probe_size(self, *, with_train: bool = False) -> int:
        """Samples behind a score ``with_train`` (training samples count only for a task that
        switches its data: no group trained on the new ones)."""
        if not (with_train and self._switched):
            return self.val_size
        return wide_probe_samples(self.val_size, self.task.sizes().train)

    def score(self, payload: bytes, *, with_train: bool = False) -> float:
        return self.score_weights(models.weights_from_bytes(payload), with_train=with_train)

    def score_weights(
        self, weights: list[np.ndarray], split: SplitName = "val", *, with_train: bool = False
    ) -> float:
        """Score of a model with ``weights`` on one of this node's splits (the validation split
        ``with_train``: its training samples too, see `probe_size`).

        Raises
        ------
        ValueError
            When the weights do not fit this node's spec (or are not finite).
        """
        self._check_fits(weights)
        accuracy = self._evaluate(weights, split)
        if split != "val" or not (with_train and self._switched):
            return accuracy
        extra = self.task.evaluate(weights, "train")
        val = self.val_size
        return (accuracy * val + extra.accuracy * extra.examples) / (val + extra.examples)

    def _evaluate(self, weights: list[np.ndarray], split: SplitName) -> float:
        started = time.perf_counter()
        scored = self.task.evaluate(weights, split)
        if split == "val":
            self._probe_seconds.append(time.perf_counter() - started)
        return scored.accuracy

    def group_weights(self) -> list[np.ndarray] | None:
        """The latest model of the node's group: its own server's, else the last received."""
        with self._servers_lock:
            server = self._servers[-1] if self._servers else None
        if server is not None:
            return server.weights()
        return self.client.last_global_weights

    def adopt(self, payload: bytes, source: str, server_round: int) -> None:
        weights = models.weights_from_bytes(payload)
        self._check_fits(weights)
        self.client.adopt(weights, source, server_round)

    def _check_fits(self, weights: list[np.ndarray]) -> None:
        """ValueError when ``weights`` do not fit this node's spec or are not finite."""
        reason = self.task.spec.mismatch([np.asarray(w) for w in weights], dtypes=False)
        if reason is None:
            reason = models.check_update(weights, self._local, math.inf)
        if reason is not None:
            raise ValueError(reason)

    def blend(self, shared: list[tuple[bytes, float]]) -> None:
        server = self.server
        if server is None:
            raise ValueError("this node leads no group: nothing to blend into")
        server.blend([(models.weights_from_bytes(payload), weight) for payload, weight in shared])

    @property
    def server(self) -> GroupServer | None:
        """The Flower server this node runs for its group (None: it runs none)."""
        with self._servers_lock:
            return self._servers[-1].group_server if self._servers else None

    def server_clients(self) -> int | None:
        """Flower clients connected to the server this node runs (None: it runs none)."""
        server = self.server
        return None if server is None else server.num_clients()

    def group_accuracy(self, *, with_train: bool = False) -> float | None:
        weights = self.group_weights()
        return None if weights is None else self.score_weights(weights, with_train=with_train)

    def test_accuracy(self) -> float | None:
        """Score of the group's model on the node's held-out test split."""
        weights = self.group_weights()
        return None if weights is None else self.score_weights(weights, "test")

    # -- Flower ----------------------------------------------------------------------------

    def start_server(self, start_round: int, *, from_group: bool) -> _Server:
        s = self.settings
        weights = (self.client.last_global_weights if from_group else None) or self._local
        server = GroupServer(
            weights,
            strategy=s.strategy,
            host=s.bind_host,
            port=s.port,
            round_timeout=s.round_timeout,
            pause=s.round_pause,
            on_round=self._round_done,
            start_round=start_round,
            tls=self.server_tls(),
            member_limits=self._member_limits,
            admit=self._admit,
        )
        port = server.start().rsplit(":", 1)[1]
        handle = _Server(server, f"{s.advertised_host}:{port}", self._stopped)
        with self._servers_lock:
            self._servers.append(handle)
        return handle

    def server_tls(self) -> TlsMaterial | None:
        """The TLS material of a server this node starts: its own certificate (mutual TLS)
        with an identity, the shared secret's without.

        Raises
        ------
        RuntimeError
            With an identity that holds no certificate yet (not enrolled: it may not serve).
        """
        identity = self.settings.identity
        if identity is None:
            return self._shared_tls
        material = _node_tls(identity)
        if material is None:
            raise RuntimeError("this node is not enrolled yet: it has no certificate to serve")
        return material

    def enrolled(self) -> None:
        """The node's certificate arrived (or changed): connect with it from now on."""
        identity = self.settings.identity
        if identity is not None:
            self.client.tls = _node_tls(identity)

    def _server_name(self, address: str) -> str | None:
        """The DNS name the server at ``address`` must present: its leader of record's."""
        with self._servers_lock:
            own = any(handle.address == address for handle in self._servers)
        leader = self._node_id if own else None
        if leader is None and self._leader_of is not None:
            leader = self._leader_of(address)
        return None if leader is None else dns_name(leader)

    def _stopped(self, handle: _Server) -> None:
        with self._servers_lock:
            if handle in self._servers:
                self._servers.remove(handle)

    def _round_done(self, result: RoundResult) -> None:
        self.round_times.append((result.round, time.monotonic()))
        del self.round_times[:-1000]
        self._on_round(
            RoundSummary(
                round=result.round,
                accuracy=result.accuracy,
                loss=result.loss,
                examples=result.examples,
                clients=result.clients,
            )
        )

    def follow(self, address: str) -> None:
        self.client.switch(address)

    def hold_group_training(self, hold: bool) -> None:
        self.client.hold = hold

    def unfollow(self) -> None:
        self.client.disconnect()

    def last_round(self) -> int:
        return self.client.last_round

    def model_source(self) -> str | None:
        return self.client.model_source

    def dead_threads(self) -> list[str]:
        dead = []
        if self.client.address is not None and not self.client.running:
            dead.append("Flower client thread")
        return dead

    def close(self) -> None:
        self.client.close()


def _node_tls(identity: NodeIdentity) -> TlsMaterial | None:
    """Mutual-TLS material from the node's certificate (None before it has one)."""
    trust, cert = identity.trust, identity.certificate
    if trust is None or cert is None:
        return None
    return TlsMaterial.for_node(trust.ca_pem, cert, identity.keys.tls_key_pem())
