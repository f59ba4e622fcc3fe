"""A group's Flower server: continuous rounds on a thread of its own, stoppable, on port 0.

Built from Flower 1.42's legacy gRPC-bidi building blocks: the Deployment Engine starts a
process per message and ran 13-15 s per round for a tiny model, and ``start_server()`` only runs
on the main thread and cannot be stopped, whereas a gRPC server with Flower's servicer plus
``Server.fit_round``/``evaluate_round`` run on any thread, bind port 0 and stop in milliseconds.
Any Flower client speaking gRPC-bidi (a stock ``NumPyClient`` started with ``start_client``) can
join a `GroupServer`. Results failing `admission` and updates failing `models.check_update` are
left out (logged) before any strategy or metric sees them; gRPC refuses messages larger than
`models.message_limit` before they are decoded.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.proto.transport_pb2_grpc import add_FlowerServiceServicer_to_server
from flwr.server import Server
from flwr.server.client_manager import SimpleClientManager
from flwr.server.superlink.fleet.grpc_bidi.flower_service_servicer import FlowerServiceServicer
from flwr.server.superlink.fleet.grpc_bidi.grpc_bridge import GrpcBridge
from flwr.server.superlink.fleet.grpc_bidi.grpc_client_proxy import GrpcClientProxy
from flwr.supercore.grpc import generic_create_grpc_server

from mycelium_p2p.learning import admission
from mycelium_p2p.learning.admission import MemberLimits
from mycelium_p2p.learning.flower.setup import install
from mycelium_p2p.learning.flower.strategies import DEFAULT_STRATEGY, CheckedStrategy, make_strategy
from mycelium_p2p.learning.models import check_update, message_limit
from mycelium_p2p.learning.tls import TlsError, TlsMaterial

log = logging.getLogger("mycelium_p2p.learning.flower")


class _PeerProxy(GrpcClientProxy):
    """Flower's proxy for one session, plus the host the session came from and, with mutual
    TLS, the node its certificate names."""

    def __init__(self, cid: str, bridge: GrpcBridge, host: str, node_id: str | None) -> None:
        super().__init__(cid=cid, bridge=bridge)
        self.host = host
        self.node_id = node_id  # as its client certificate names it (mutual TLS only)


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), else it whole."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return rest.rpartition(":")[0].strip("[]")
    return peer


class _PeerServicer(FlowerServiceServicer):
    """Flower's servicer, whose proxies know their peer's host (to key cool-downs).

    With ``admit``, a session whose client certificate names a node ``admit`` refuses (a
    revoked one) ends before its first message.
    """

    def __init__(
        self, client_manager: SimpleClientManager, admit: Callable[[str], bool] | None = None
    ) -> None:
        super().__init__(client_manager, grpc_client_proxy_factory=self._proxy)
        self._local = threading.local()
        self._admit = admit

    def _proxy(self, cid: str, bridge: GrpcBridge) -> GrpcClientProxy:
        local = self._local
        return _PeerProxy(cid, bridge, getattr(local, "host", ""), getattr(local, "node_id", None))

    def Join(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        # Flower builds the proxy inside its Join, on this thread, before its first message.
        self._local.host = peer_host(context.peer())
        self._local.node_id = None
        if self._admit is not None:
            names = context.auth_context().get("x509_common_name") or [b""]
            node_id = names[0].decode(errors="replace")
            self._local.node_id = node_id
            if not self._admit(node_id):
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{node_id!r} is not admitted")
        yield from super().Join(request_iterator, context)


def _serve(
    manager: SimpleClientManager,
    address: str,
    max_message_length: int,
    certificates: tuple[bytes, bytes, bytes] | None,
    mutual: bool = False,
    admit: Callable[[str], bool] | None = None,
) -> grpc.Server:
    """What ``start_grpc_server`` does, with `_PeerServicer` and a message size limit; with
    ``mutual``, TLS that requires a client certificate from the CA of ``certificates`` (Flower
    hard-codes ``require_client_auth=False``, so that server is built here)."""
    servicer = _PeerServicer(manager, admit if mutual else None)
    if not mutual or certificates is None:
        server = generic_create_grpc_server(
            servicer_and_add_fn=(servicer, add_FlowerServiceServicer_to_server),
            server_address=address,
            max_message_length=max_message_length,
            certificates=certificates,
        )
        server.start()
        return server
    workers = 64
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers),
        maximum_concurrent_rpcs=workers,
        options=[
            ("grpc.max_concurrent_streams", max(100, workers)),
            ("grpc.max_send_message_length", max_message_length),
            ("grpc.max_receive_message_length", max_message_length),
            ("grpc.so_reuseport", 0),
        ],
    )
    add_FlowerServiceServicer_to_server(servicer, server)
    ca, cert, key = certificates
    credentials = grpc.ssl_server_credentials(
        ((key, cert),), root_certificates=ca, require_client_auth=True
    )
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    if port == 0:
        raise SystemExit(f"cannot bind {address}")
    server.bound_address = f"{address.rpartition(':')[0]}:{port}"  # type: ignore[attr-defined]
    server.start()
    return server


@dataclass(frozen=True)
class RoundResult:
    """One completed round of a group.

    ``accuracy``/``loss`` are the federated evaluation of the new global model on the clients'
    validation splits, weighted by ``examples``; ``clients`` is the number of fit results
    that came back; ``failures`` the clients that failed or timed out; ``rejected`` the fit
    results left out (by `admission` or `check_update`); ``rejected_evaluations`` the
    evaluate results left out by `admission`.
    """

    round: int
    accuracy: float
    loss: float
    examples: int
    clients: int
    weights: list[np.ndarray]
    seconds: float
    failures: int = 0
    rejected: int = 0
    rejected_evaluations: int = 0


class _ShortWaitClientManager(SimpleClientManager):
    """Flower's client manager, but waits at most ``max_wait`` s and wakes on ``stop``."""

    def __init__(self, stop: threading.Event, max_wait: float) -> None:
        super().__init__()
        self._stop = stop
        self._max_wait = max_wait

    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        deadline = time.monotonic() + min(float(timeout), self._max_wait)
        with self._cv:
            while len(self.clients) < num_clients:
                remaining = deadline - time.monotonic()
                if self._stop.is_set() or remaining <= 0:
                    return False
                self._cv.wait(min(remaining, 0.25))
            return True

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


class GroupServer:
    """A group's Flower server: continuous rounds on a thread of its own.

    Parameters
    ----------
    initial_weights : list of np.ndarray
        The global model to start from (always given to the strategy, so no client is asked).
    strategy : str
        A name from `STRATEGIES` (default: `DEFAULT_STRATEGY`, "median"). Krum/MultiKrum
        (f = 1) need 5 updates per round and Bulyan (f = 1) 7: with fewer, that round is
        aggregated by the median instead (logged).
    host, port : str, int
        Where to bind (default: "127.0.0.1", 0 = the OS chooses).
    round_timeout : float
        Seconds a client may take for fit or evaluate; a straggler is cut off and must
        reconnect (default: 30).
    min_clients : int
        Clients needed to run a round (default: 1).
    pause : float
        Seconds between rounds (default: 0).
    on_round : callable or None
        Called with each `RoundResult`, on the server's thread (default: None).
    start_round : int
        Rounds already done, e.g. by a previous leader (default: 0).
    max_norm_ratio : float
        `check_update` bound for client updates (default: 10).
    strategy_options : dict or None
        Keyword overrides for the Flower strategy (default: None).
    wait_timeout : float
        Longest wait for clients before the loop looks again (default: 1).
    tls : TlsMaterial or None
        Serve over TLS with this server certificate (`TlsMaterial.for_server`), with mutual
        TLS (`TlsMaterial.for_node`: only clients with a certificate from the same CA), or in
        the clear (default: None).
    member_limits : callable or None
        ``member_limits(node_id)``: None when ``node_id`` is not a live member of the group,
        else its announced sizes (`admission.MemberLimits`). When given, every result must
        state its member's ``node_id`` (as `MemberClient` does with ``node_id``) and is held
        to that member's sizes; when None, any client may take part and ``node_id`` is
        optional (default: None).
    max_examples : int
        Bound on ``num_examples`` of a member that announced no size
        (default: `admission.MAX_UNANNOUNCED_EXAMPLES`).
    strikes, cool_down : int, float
        A session refused in ``strikes`` rounds in a row is disconnected; the id it stated
        gets no new session from its host for ``cool_down`` seconds (defaults:
        `admission.STRIKES`, `admission.COOL_DOWN`).
    admit : callable or None
        With mutual TLS: ``admit(node_id)`` of each session's client certificate; False ends
        the session (a revoked node) (default: None: every certified client).

    Messages larger than `models.message_limit` of ``initial_weights`` are refused by gRPC.
    """

    def __init__(
        self,
        initial_weights: list[np.ndarray],
        *,
        strategy: str = DEFAULT_STRATEGY,
        host: str = "127.0.0.1",
        port: int = 0,
        round_timeout: float = 30.0,
        min_clients: int = 1,
        pause: float = 0.0,
        on_round: Callable[[RoundResult], None] | None = None,
        start_round: int = 0,
        max_norm_ratio: float = 10.0,
        strategy_options: dict[str, Any] | None = None,
        wait_timeout: float = 1.0,
        tls: TlsMaterial | None = None,
        member_limits: Callable[[str], MemberLimits | None] | None = None,
        max_examples: int = admission.MAX_UNANNOUNCED_EXAMPLES,
        strikes: int = admission.STRIKES,
        cool_down: float = admission.COOL_DOWN,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        install()
        if min_clients < 1:
            raise ValueError("min_clients must be at least 1")
        if tls is not None and not tls.is_server:
            raise TlsError("GroupServer needs TLS material with a server certificate")
        self._tls = tls
        self._admit = admit
        self._weights = [np.array(w, copy=True) for w in initial_weights]
        self._blends: list[list[tuple[list[np.ndarray], float]]] = []
        self.blended = 0  # blends folded into the model so far
        self._strategy_name = strategy
        self._strategy = CheckedStrategy(
            make_strategy(strategy, self._weights, options=strategy_options),
            max_norm_ratio,
            fallback=make_strategy("median", self._weights),
            member_limits=member_limits,
            max_examples=max_examples,
            sessions=admission.Sessions(strikes, cool_down),
        )
        self.max_message_length = message_limit(self._weights)
        self.dropped: collections.deque[tuple[int, str | None, str]] = collections.deque(maxlen=256)
        self._host, self._port = host, int(port)
        self.round_timeout = float(round_timeout)
        self.min_clients = min_clients
        self.pause = float(pause)
        self.on_round = on_round
        self._round = int(start_round)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._round_lock = threading.Lock()
        self._manager = _ShortWaitClientManager(self._stop, wait_timeout)
        self._server = Server(client_manager=self._manager, strategy=self._strategy)
        self._server.parameters = ndarrays_to_parameters(self._weights)
        self._grpc: grpc.Server | None = None
        self._thread: threading.Thread | None = None
        self.address: str | None = None
        # Recent rounds only: a group runs for hours.
        self.results: collections.deque[RoundResult] = collections.deque(maxlen=64)

    # -- state ------------------------------------------------------------------------------

    @property
    def round(self) -> int:
        """Rounds completed (including ``start_round``)."""
        with self._lock:
            return self._round

    def set_round(self, n: int) -> None:
        """Continue counting from ``n`` completed rounds (for a leader taking over)."""
        with self._lock:
            self._round = int(n)

    def latest_weights(self) -> list[np.ndarray]:
        """A copy of the current global model."""
        with self._lock:
            return [w.copy() for w in self._weights]

    def blend(self, models: list[tuple[list[np.ndarray], float]]) -> None:
        """Mix other groups' models into this group's model before its next round.

        ``models`` pairs each model with its weight; the weights are positive and sum to 1 at
        most, and what they leave is this group's own model's share (none for a group founded
        from other groups' models). A model that does not pass
        `check_update` against this group's (shape, NaN/inf, ``max_norm_ratio``) is refused
        with ValueError, and nothing is queued.
        """
        own = self.latest_weights()
        total = sum(weight for _, weight in models)
        if not models or not all(0.0 < w <= 1.0 for _, w in models) or not total <= 1.0 + 1e-9:
            raise ValueError(f"blend weights must be in (0, 1] and sum to 1 at most, got {total!r}")
        for weights, _ in models:
            reason = check_update(weights, own, self._strategy.max_norm_ratio)
            if reason is not None:
                raise ValueError(f"cannot blend a model: {reason}")
        with self._lock:
            self._blends.append([(list(weights), weight) for weights, weight in models])
            if total >= 1.0 - 1e-9:
                # Nothing of its own is kept: that is the group's model from now on, for probes
                # and takeovers before the next round too (which starts from it again, whatever
                # a round under way brings back).
                self._weights = _mixed(self._weights, models)
                self._server.parameters = ndarrays_to_parameters(self._weights)

    def _apply_blends(self) -> None:
        """Fold the queued blends into the model the next round starts from."""
        with self._lock:
            pending, self._blends = self._blends, []
            for models in pending:
                self._weights = _mixed(self._weights, models)
            if pending:
                self._server.parameters = ndarrays_to_parameters(self._weights)
                self.blended += len(pending)

    def num_clients(self) -> int:
        """Clients connected now."""
        return self._manager.num_available()

    def session_nodes(self) -> list[str]:
        """The nodes of the open sessions, as their client certificates name them (mutual TLS
        only; sessions without one are not listed)."""
        proxies = self._manager.all().values()
        return sorted(p.node_id for p in proxies if getattr(p, "node_id", None))

    @property
    def rejected(self) -> list[tuple[int, str]]:
        """(round, reason) of the latest (up to 256) updates dropped by `check_update`."""
        return list(self._strategy.rejected)

    @property
    def strategy_name(self) -> str:
        """The strategy name this server was built with."""
        return self._strategy_name

    @property
    def fallbacks(self) -> int:
        """Rounds aggregated by the median because the strategy had too few updates."""
        return self._strategy.fallbacks

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, start the round loop and return the bound ``host:port``.

        Raises
        ------
        OSError
            When the port cannot be bound (Flower would otherwise exit the process).
        """
        if self._grpc is not None:
            raise RuntimeError("GroupServer already started")
        try:
            self._grpc = _serve(
                self._manager,
                f"{self._host}:{self._port}",
                self.max_message_length,
                None if self._tls is None else self._tls.server_certificates(),
                mutual=self._tls is not None and self._tls.mutual,
                admit=self._admit,
            )
        except SystemExit as exc:
            raise OSError(
                f"cannot bind Flower server at {self._host}:{self._port}: {exc}"
            ) from None
        port = int(str(self._grpc.bound_address).rpartition(":")[2])
        self.address = f"{self._host}:{port}"
        self._thread = threading.Thread(target=self._loop, name="flower-group", daemon=True)
        self._thread.start()
        return self.address

    def stop(self, grace: float = 0.2) -> None:
        """Stop rounds, disconnect clients and close the server (about a second at most)."""
        self._stop.set()
        self._manager.wake()
        # Between rounds, tell clients to go (clean); mid-round, closing the streams suffices.
        if self._round_lock.acquire(timeout=0.05):
            try:
                if self._manager.num_available():
                    self._server.disconnect_all_clients(timeout=1.0)
            except Exception as exc:
                log.debug("disconnect_all_clients: %s", exc)
            finally:
                self._round_lock.release()
        if self._grpc is not None:
            self._grpc.stop(grace).wait(2.0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    # -- rounds -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._manager.wait_for(self.min_clients, timeout=86400):
                continue
            with self._round_lock:
                if self._stop.is_set():
                    break
                if self._end_refused_sessions():
                    continue  # wait again for enough clients
                try:
                    result = self._run_round()
                except Exception:  # a broken round must not kill the group
                    log.exception("round failed")
                    result = None
            if result is not None and self.on_round is not None:
                try:
                    self.on_round(result)
                except Exception:
                    log.exception("on_round callback failed")
            if self.pause > 0:
                self._stop.wait(self.pause)

    def _run_round(self) -> RoundResult | None:
        started = time.monotonic()
        self._apply_blends()
        number = self.round + 1
        rejected_before = self._strategy.rejected_total
        evaluations_before = self._strategy.rejected_evaluations
        fit = self._server.fit_round(server_round=number, timeout=self.round_timeout)
        if fit is None:  # no client sampled: skip, the round number is not used
            return None
        params, _, (fit_results, fit_failures) = fit
        if self._stop.is_set() or not fit_results:
            # Nothing came back (all failed or timed out): not a round; clients reconnect.
            self._drop_sessions(number)
            return None
        if params is not None:
            self._server.parameters = params
            weights = parameters_to_ndarrays(params)
            with self._lock:
                self._weights = weights
        evaluated = self._server.evaluate_round(server_round=number, timeout=self.round_timeout)
        loss, accuracy, examples = float("nan"), float("nan"), 0
        if evaluated is not None:
            pairs = [res for _, res in self._strategy.evaluated]  # admitted results only
            examples = sum(r.num_examples for r in pairs)
            if examples:
                loss = sum(r.loss * r.num_examples for r in pairs) / examples
                with_acc = [r for r in pairs if "accuracy" in r.metrics]
                n_acc = sum(r.num_examples for r in with_acc)
                if n_acc:
                    accuracy = (
                        sum(float(r.metrics["accuracy"]) * r.num_examples for r in with_acc) / n_acc
                    )
        with self._lock:
            self._round = number
            weights = [w.copy() for w in self._weights]
        self._drop_sessions(number)
        result = RoundResult(
            round=number,
            accuracy=accuracy,
            loss=loss,
            examples=examples,
            clients=len(fit_results),
            weights=weights,
            seconds=time.monotonic() - started,
            failures=len(fit_failures),
            rejected=self._strategy.rejected_total - rejected_before,
            rejected_evaluations=self._strategy.rejected_evaluations - evaluations_before,
        )
        self.results.append(result)
        log.debug(
            "round %d: accuracy %.3f loss %.3f (%d clients, %d failed, %.2f s)",
            number,
            accuracy,
            loss,
            result.clients,
            result.failures,
            result.seconds,
        )
        return result

    def _end_refused_sessions(self) -> bool:
        """End the open sessions of nodes no longer admitted (revoked since they joined): a
        revocation reaches a running session before its next round. True if any ended."""
        if self._admit is None:
            return False
        ended = False
        for proxy in list(self._manager.all().values()):
            node_id = getattr(proxy, "node_id", None)
            if node_id is None or self._admit(node_id):
                continue
            log.warning("ended the session of %s: no longer admitted (revoked)", node_id)
            proxy.bridge.close()  # ends its Join stream
            self._manager.unregister(proxy)
            ended = True
        return ended

    def _drop_sessions(self, number: int) -> None:
        """Disconnect the sessions `admission.Sessions` gives up on after round ``number``."""
        clients = self._manager.all()
        for session, node_id, why in self._strategy.sessions.end_round(clients):
            proxy = clients.get(session)
            log.warning(
                "round %d: dropped %s (session %s): %s; no new session for %.0f s",
                number,
                node_id or "a member without id",
                session[:8],
                why,
                self._strategy.sessions.cool_down,
            )
            self.dropped.append((number, node_id, why))
            if proxy is None:
                continue
            bridge = getattr(proxy, "bridge", None)
            if bridge is not None:
                bridge.close()  # ends its Join stream: the client is cut off
            self._manager.unregister(proxy)


def _mixed(own: list[np.ndarray], models: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
    """``own`` with ``models`` mixed in at their weights; ``own`` keeps what they leave."""
    share = max(0.0, 1.0 - sum(weight for _, weight in models))
    return [
        (share * mine + sum(weight * m[i] for m, weight in models)).astype(mine.dtype)
        for i, mine in enumerate(own)
    ]
