"""The Flower glue: a group's server and a member's client, in-process (the ONLY flwr importer).

Built from Flower 1.42's legacy gRPC-bidi building blocks (``notes/flower-1.42.md``): the
Deployment Engine starts a process per message and ran 13-15 s per round for a tiny model,
``start_server()`` only runs on the main thread and cannot be stopped, whereas
``start_grpc_server`` + ``Server.fit_round``/``evaluate_round`` run on any thread, bind port 0
and stop in milliseconds. Any Flower client speaking gRPC-bidi (a stock ``NumPyClient``
started with ``start_client``) can join a `GroupServer`.

`GroupServer`
    Runs rounds continuously on its own thread: fit on every connected client, then federated
    evaluation on them, metrics weighted by examples, one `RoundResult` per round to
    ``on_round``. A round with no client is skipped; waits are short and wake on ``stop()``.
    Results failing `admission` (bounded numbers, a stated member id) and updates failing
    `models.check_update` are left out (logged) before any strategy or metric sees them;
    gRPC refuses messages larger than `models.message_limit` before they are decoded.
`MemberClient`
    A ``NumPyClient`` over one node's data that stays connected to a wanted server address,
    reconnects after a round timeout or a lost server, and can ``switch`` servers in-process.
"""

from __future__ import annotations

import os

# Before flwr is imported: no usage telemetry, no update check (a LAN has no internet).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import collections
import copy
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from flwr.common import (
    EvaluateRes,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.client import app as _client_app
from flwr.compat.client.grpc_client import connection as _client_connection
from flwr.compat.client.numpy_client import NumPyClient
from flwr.proto.transport_pb2_grpc import add_FlowerServiceServicer_to_server
from flwr.server import Server
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    Bulyan,
    FaultTolerantFedAvg,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)
from flwr.server.superlink.fleet.grpc_bidi.flower_service_servicer import FlowerServiceServicer
from flwr.server.superlink.fleet.grpc_bidi.grpc_bridge import GrpcBridge
from flwr.server.superlink.fleet.grpc_bidi.grpc_client_proxy import GrpcClientProxy
from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server
from flwr.supercore.grpc import generic_create_grpc_server

from . import admission
from .admission import MemberLimits, Refusal
from .data import NodeData
from .models import build_model, check_update, get_weights, message_limit, set_weights
from .tls import TlsError, TlsMaterial
from .train import evaluate, train

log = logging.getLogger(__name__)
logging.getLogger("flwr").setLevel(logging.WARNING)

STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedmedian",
    "median",
    "trimmed-mean",
    "krum",
    "multikrum",
    "bulyan",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "faulttolerant-fedavg",
)

# The groups' default, chosen by `mycelium bench byzantine` (docs/security.md): against one
# poisoning member of five the median lost at most 0.018 accuracy where FedAvg lost 0.69-0.82,
# it cost nothing on clean runs, and it needs no f (it holds for any minority of attackers).
DEFAULT_STRATEGY = "median"

# --- addresses and channels ---------------------------------------------------------------


def check_address(address: str) -> str:
    """Return ``address`` if it is ``host:port`` with a valid port, else raise ValueError."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return address


def wait_for_server(
    address: str,
    timeout: float,
    cancelled: Callable[[], bool] | None = None,
    root_certificates: bytes | None = None,
) -> bool:
    """True once a gRPC server accepts connections at ``address`` (within ``timeout`` s).

    ``cancelled`` is polled every 0.1 s; when it returns True the wait ends with False. With
    ``root_certificates`` (PEM) the channel is TLS and is ready only once the server's
    certificate verifies against them.
    """
    if root_certificates is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates))
    future = grpc.channel_ready_future(channel)
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancelled is not None and cancelled()):
                return False
            try:
                future.result(timeout=min(remaining, 0.1))
                return True
            except grpc.FutureTimeoutError:
                continue
    finally:
        future.cancel()
        _close_after_polling(channel)


def _close_after_polling(channel: grpc.Channel, limit: float = 0.5) -> None:
    """Close ``channel`` once grpc's connectivity-polling thread has let go of it.

    That thread re-checks for subscribers every 0.2 s; a channel closed under it makes it raise
    "Cannot monitor channel state: Channel closed!" (harmless, but an exception in a thread).
    """
    state = getattr(channel, "_connectivity_state", None)  # grpc internals: absent, just close
    deadline = time.monotonic() + limit
    while getattr(state, "polling", False) and time.monotonic() < deadline:
        time.sleep(0.01)
    channel.close()


class _QuietBridgeClosed(logging.Filter):
    """Drop grpc's error log for a stream that Flower's bridge closed on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "GrpcBridgeClosed"


if not any(isinstance(f, _QuietBridgeClosed) for f in logging.getLogger("grpc._server").filters):
    logging.getLogger("grpc._server").addFilter(_QuietBridgeClosed())


# The legacy client keeps its gRPC stream private, so a client could only leave when its
# server sends something. The channel of each member's connection thread is wrapped so that
# its stream (the Join call) is recorded; `MemberClient` cancels that call to leave at once
# (the blocked receive raises, Flower closes the channel in its own thread). Cancelling a
# call is safe at any moment; closing a channel is not (an RPC started on a closed channel
# crashes grpc 1.85). A leave requested before the call exists leaves a mark, so the call is
# cancelled at birth. Only registered member threads are touched: thread ids get reused.
_member_threads: set[int] = set()
_calls: dict[int, Any] = {}
_cancelled: set[int] = set()
_calls_lock = threading.Lock()
_original_create_channel = _client_connection.create_channel


class _CallRecordingChannel:
    """A grpc channel whose stream-stream calls are recorded for the opening thread."""

    def __init__(self, channel: grpc.Channel, ident: int) -> None:
        self._channel = channel
        self._ident = ident

    def stream_stream(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        multicallable = self._channel.stream_stream(*args, **kwargs)
        ident = self._ident

        def invoke(*call_args: Any, **call_kwargs: Any) -> Any:
            call = multicallable(*call_args, **call_kwargs)
            if call_args:
                requests = call_args[0]
                call.add_done_callback(lambda _call: _end_requests(requests))
            with _calls_lock:
                stillborn = ident in _cancelled
                _cancelled.discard(ident)
                if not stillborn:
                    _calls[ident] = call
            if stillborn:
                call.cancel()
            return call

        return invoke

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def _end_requests(requests: Any) -> None:
    """Let grpc's request-consumer thread exit once the Join call is over.

    Flower's request iterator is ``iter(queue.get, None)``; grpc reads it on a thread that
    stays blocked in ``queue.get`` after the call ends (one leaked thread per session).
    Putting the sentinel ends it. Anything unexpected is left alone.
    """
    try:
        getter, sentinel = requests.__reduce__()[1]
        getter.__self__.put_nowait(sentinel)
    except Exception:
        pass


def _recording_create_channel(*args: Any, **kwargs: Any) -> Any:
    channel = _original_create_channel(*args, **kwargs)
    ident = threading.get_ident()
    with _calls_lock:
        if ident not in _member_threads:
            return channel
    return _CallRecordingChannel(channel, ident)


if getattr(_client_connection.create_channel, "__name__", "") != "_recording_create_channel":
    _client_connection.create_channel = _recording_create_channel


def _register_member_thread(ident: int, active: bool) -> None:
    with _calls_lock:
        _calls.pop(ident, None)
        _cancelled.discard(ident)
        if active:
            _member_threads.add(ident)
        else:
            _member_threads.discard(ident)


def _cancel_thread_call(thread_id: int | None) -> None:
    if thread_id is None:
        return
    with _calls_lock:
        if thread_id not in _member_threads:
            return
        call = _calls.pop(thread_id, None)
        if call is None:
            _cancelled.add(thread_id)
    if call is not None:
        call.cancel()


def _forget_thread_call(thread_id: int) -> None:
    with _calls_lock:
        _calls.pop(thread_id, None)
        _cancelled.discard(thread_id)


# --- server ---------------------------------------------------------------------------------


class _PeerProxy(GrpcClientProxy):
    """Flower's proxy for one session, plus the host the session came from."""

    def __init__(self, cid: str, bridge: GrpcBridge, host: str) -> None:
        super().__init__(cid=cid, bridge=bridge)
        self.host = host


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), else it whole."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return rest.rpartition(":")[0].strip("[]")
    return peer


class _PeerServicer(FlowerServiceServicer):
    """Flower's servicer, whose proxies know their peer's host (to key cool-downs)."""

    def __init__(self, client_manager: SimpleClientManager) -> None:
        super().__init__(client_manager, grpc_client_proxy_factory=self._proxy)
        self._local = threading.local()

    def _proxy(self, cid: str, bridge: GrpcBridge) -> GrpcClientProxy:
        return _PeerProxy(cid, bridge, getattr(self._local, "host", ""))

    def Join(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        # Flower builds the proxy inside its Join, on this thread, before its first message.
        self._local.host = peer_host(context.peer())
        yield from super().Join(request_iterator, context)


def _serve(
    manager: SimpleClientManager,
    address: str,
    max_message_length: int,
    certificates: tuple[bytes, bytes, bytes] | None,
) -> grpc.Server:
    """What ``start_grpc_server`` does, with `_PeerServicer` and a message size limit."""
    server = generic_create_grpc_server(
        servicer_and_add_fn=(_PeerServicer(manager), add_FlowerServiceServicer_to_server),
        server_address=address,
        max_message_length=max_message_length,
        certificates=certificates,
    )
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


class _CheckedStrategy(Strategy):
    """Delegates to a Flower strategy after leaving out results that fail the checks.

    Every fit and evaluate result passes `admission` first (and fit results `check_update`);
    ``member_limits`` (when given) names the group's members and their announced sizes, and
    every result must then state a member's ``node_id``.
    """

    def __init__(
        self,
        inner: Strategy,
        max_norm_ratio: float,
        fallback: Strategy | None = None,
        *,
        member_limits: Callable[[str], MemberLimits | None] | None = None,
        max_examples: int = admission.MAX_UNANNOUNCED_EXAMPLES,
        sessions: admission.Sessions | None = None,
    ) -> None:
        self.inner = inner
        self.max_norm_ratio = max_norm_ratio
        self.member_limits = member_limits
        self.max_examples = max_examples
        self.sessions = sessions or admission.Sessions()
        self._limits: dict[str, MemberLimits | None] = {}  # this round's answers
        self.evaluated: list[tuple[ClientProxy, EvaluateRes]] = []
        self.rejected_evaluations = 0
        # Krum and Bulyan only hold their guarantee with enough updates (`robust_minimum`);
        # with fewer, the round is aggregated by ``fallback`` (the coordinate-wise median).
        self.fallback = fallback
        self.minimum = robust_minimum(inner)
        self.fallbacks = 0
        self._fallback_for = 0
        self.reference: list[np.ndarray] = []
        self.rejected: collections.deque[tuple[int, str]] = collections.deque(maxlen=256)
        self.rejected_total = 0

    def __repr__(self) -> str:
        return f"Checked({self.inner!r})"

    def initialize_parameters(self, client_manager: Any) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        self.reference = parameters_to_ndarrays(parameters)
        self._limits = {}
        self.evaluated = []
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def _member(self, node_id: str) -> MemberLimits | None:
        if node_id not in self._limits:
            try:
                self._limits[node_id] = self.member_limits(node_id)  # type: ignore[misc]
            except Exception as exc:  # a view that cannot answer knows no member
                log.debug("member_limits(%r) failed: %s", node_id, exc)
                self._limits[node_id] = None
        return self._limits[node_id]

    def admit(
        self, server_round: int, proxy: ClientProxy, res: FitRes | EvaluateRes
    ) -> Refusal | None:
        """None when ``res`` may go into the round; else why not (logged at WARNING)."""
        session, metrics = proxy.cid, res.metrics
        node_id = metrics.get("node_id")
        refusal: Refusal | None = None
        limits = None
        if self.member_limits is not None or node_id is not None:
            refusal = self.sessions.identify(session, getattr(proxy, "host", ""), node_id)
        if refusal is None and self.member_limits is not None:
            limits = self._member(str(node_id))
            if limits is None:
                refusal = Refusal(f"{node_id} is not a live member of this group", strike=False)
        if refusal is None:
            if isinstance(res, FitRes):
                refusal = admission.check_fit(res.num_examples, metrics, limits, self.max_examples)
            else:
                refusal = admission.check_evaluate(
                    res.loss, res.num_examples, metrics, limits, self.max_examples
                )
        self.sessions.record(session, refusal)
        if refusal is not None:
            who = self.sessions.node_id(session) or "a member without id"
            kind = "fit" if isinstance(res, FitRes) else "evaluate"
            log.warning(
                "round %d: refused %s result of %s (session %s): %s",
                server_round,
                kind,
                who,
                session[:8],
                refusal.reason,
            )
        return refusal

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        kept = []
        for proxy, res in results:
            refusal = self.admit(server_round, proxy, res)
            if refusal is not None:
                self.rejected.append((server_round, refusal.reason))
                self.rejected_total += 1
                continue
            try:
                reason = check_update(
                    parameters_to_ndarrays(res.parameters), self.reference, self.max_norm_ratio
                )
            except Exception as exc:  # undecodable tensors are garbage too
                reason = f"undecodable parameters: {exc}"
            if reason is None:
                kept.append((proxy, res))
            else:
                log.warning("round %d: dropped update from %s: %s", server_round, proxy.cid, reason)
                self.rejected.append((server_round, reason))
                self.rejected_total += 1
        if not kept:
            return None, {}
        aggregator = self.inner
        if len(kept) < self.minimum and self.fallback is not None:
            # Warn when it starts (or the count changes), not every round of a small group.
            warn = self._fallback_for != len(kept)
            self._fallback_for = len(kept)
            (log.warning if warn else log.debug)(
                "round %d: %d updates, %r needs %d: aggregated by %r instead",
                server_round,
                len(kept),
                self.inner,
                self.minimum,
                self.fallback,
            )
            aggregator = self.fallback
            self.fallbacks += 1
        else:
            self._fallback_for = 0
        try:
            params, metrics = aggregator.aggregate_fit(server_round, kept, failures)
        except Exception as exc:  # e.g. Bulyan/Krum with too few clients
            log.warning("round %d: %r could not aggregate: %s", server_round, self.inner, exc)
            return None, {}
        if params is not None:
            reason = check_update(parameters_to_ndarrays(params), self.reference, 1e6)
            if reason is not None:
                log.warning("round %d: aggregate discarded: %s", server_round, reason)
                return None, {}
        return params, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: Any
    ) -> Any:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[Any],
    ) -> tuple[float | None, dict[str, Scalar]]:
        self.evaluated = [(p, r) for p, r in results if self.admit(server_round, p, r) is None]
        self.rejected_evaluations += len(results) - len(self.evaluated)
        if not self.evaluated:
            return None, {}
        return self.inner.aggregate_evaluate(server_round, self.evaluated, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> Any:
        return self.inner.evaluate(server_round, parameters)


def robust_minimum(strategy: Strategy) -> int:
    """Updates a strategy needs per round for its Byzantine guarantee with f attackers.

    Krum (and MultiKrum) need ``n >= 2f + 3``, Bulyan ``n >= 4f + 3`` (El Mhamdi et al. 2018;
    Flower's Bulyan raises below that); every other strategy: 1.
    """
    f = int(getattr(strategy, "num_malicious_clients", 0) or 0)
    if isinstance(strategy, Bulyan):
        return 4 * f + 3
    if isinstance(strategy, Krum):
        return 2 * f + 3
    return 1


def _weighted_accuracy(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    pairs = [(n, float(m["accuracy"])) for n, m in metrics if "accuracy" in m]
    total = sum(n for n, _ in pairs)
    return {"accuracy": sum(n * a for n, a in pairs) / total} if total else {}


def make_strategy(
    name: str,
    initial_weights: list[np.ndarray],
    *,
    options: dict[str, Any] | None = None,
) -> Strategy:
    """Build a Flower strategy by name (see `STRATEGIES`); unknown names raise ValueError.

    Every strategy samples all connected clients for fit and evaluation, accepts failures and
    starts from ``initial_weights``; ``options`` override the constructor's keywords.
    """
    key = name.strip().lower()

    def fit_config(server_round: int) -> dict[str, Scalar]:
        return {"server_round": server_round}

    common: dict[str, Any] = {
        "fraction_fit": 1.0,
        "fraction_evaluate": 1.0,
        # GroupServer gates each round on ``min_clients``; once a round runs, Flower samples
        # whoever is connected (so evaluation still runs after a fit that lost members).
        "min_fit_clients": 1,
        "min_evaluate_clients": 1,
        "min_available_clients": 1,
        "initial_parameters": ndarrays_to_parameters(initial_weights),
        "on_fit_config_fn": fit_config,
        "on_evaluate_config_fn": fit_config,
        "evaluate_metrics_aggregation_fn": _weighted_accuracy,
        "fit_metrics_aggregation_fn": lambda _metrics: {},
        "accept_failures": True,
    }
    builders: dict[str, tuple[type[Strategy], dict[str, Any]]] = {
        "fedavg": (FedAvg, {}),
        "fedprox": (FedProx, {"proximal_mu": 0.1}),
        "fedmedian": (FedMedian, {}),
        "median": (FedMedian, {}),
        "trimmed-mean": (FedTrimmedAvg, {"beta": 0.2}),
        "krum": (Krum, {"num_malicious_clients": 1}),
        "multikrum": (Krum, {"num_malicious_clients": 1, "num_clients_to_keep": 3}),
        # f = 1 needs 7 updates; smaller groups fall back to the median (`robust_minimum`).
        "bulyan": (Bulyan, {"num_malicious_clients": 1, "to_keep": 0}),
        "fedadam": (FedAdam, {"eta": 1e-2, "tau": 1e-3}),
        "fedyogi": (FedYogi, {"eta": 1e-2, "tau": 1e-3}),
        "fedadagrad": (FedAdagrad, {"eta": 1e-2, "tau": 1e-3}),
        "faulttolerant-fedavg": (FaultTolerantFedAvg, {}),
    }
    if key not in builders:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    cls, extra = builders[key]
    kwargs = {**common, **extra, **(options or {})}
    if cls is FaultTolerantFedAvg:
        kwargs.pop("accept_failures", None)
    return cls(**kwargs)


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
        Serve over TLS with this server certificate (`TlsMaterial.for_server`), or in the
        clear (default: None).
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
    ) -> None:
        if min_clients < 1:
            raise ValueError("min_clients must be at least 1")
        if tls is not None and not tls.is_server:
            raise TlsError("GroupServer needs TLS material with a server certificate")
        self._tls = tls
        self._weights = [np.array(w, copy=True) for w in initial_weights]
        self._strategy_name = strategy
        self._strategy = _CheckedStrategy(
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

    def num_clients(self) -> int:
        """Clients connected now."""
        return self._manager.num_available()

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


# --- client ---------------------------------------------------------------------------------


class MemberClient(NumPyClient):
    """A member's Flower client over its own data; connect, switch and disconnect at run time.

    Parameters
    ----------
    data : NodeData
        Fit on ``data.train``, evaluate on ``data.val``.
    spec : str
        Model spec (``models.model_spec``).
    local_epochs, batch_size, lr, seed
        Local training settings (defaults: 2, 32, 3e-3, 0); the seed is advanced per round.
    on_global : callable or None
        Called with ``(weights, round)`` whenever a newer global model arrives (default: None).
    connect_timeout : float
        Seconds to wait for a server to listen before retrying (default: 2).
    tls : TlsMaterial or None
        Connect over TLS, verifying the server against ``tls.ca_cert`` (`TlsMaterial.for_member`),
        or in the clear (default: None). A server whose certificate does not verify is never
        joined: the client keeps retrying with back-off.
    node_id : str or None
        Stated as ``node_id`` in every fit and evaluate result, for a leader that checks who
        speaks (`GroupServer`'s ``member_limits``) (default: None, not stated).

    The channel refuses messages larger than `models.message_limit` of the model.
    """

    def __init__(
        self,
        data: NodeData,
        spec: str,
        *,
        local_epochs: int = 2,
        batch_size: int = 32,
        lr: float = 3e-3,
        seed: int = 0,
        on_global: Callable[[list[np.ndarray], int], None] | None = None,
        connect_timeout: float = 2.0,
        tls: TlsMaterial | None = None,
        node_id: str | None = None,
    ) -> None:
        self.data = data
        self.node_id = node_id
        self.tls = tls
        self.spec = spec
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.on_global = on_global
        self.connect_timeout = connect_timeout
        self._model = build_model(spec, seed=seed)
        self.max_message_length = message_limit(get_weights(self._model))
        self._model_lock = threading.Lock()
        self._state = threading.Condition()
        self._target: str | None = None
        self._closed = False
        self._connected = False
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._last_global: list[np.ndarray] | None = None
        self._last_round = 0
        self.fits = 0
        self.sessions = 0

    # -- NumPyClient ------------------------------------------------------------------------

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        with self._model_lock:
            return get_weights(self._model)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        server_round = int(config.get("server_round", 0))
        self._received(parameters, server_round - 1)
        with self._model_lock:
            set_weights(self._model, parameters)
            loss = train(
                self._model,
                self.data.train,
                epochs=self.local_epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                seed=self.seed * 100_003 + server_round,
                proximal_mu=float(config.get("proximal_mu", 0.0)),
            )
            weights = get_weights(self._model)
        self.fits += 1
        return weights, len(self.data.train), {"loss": float(loss), **self._identity()}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        self._received(parameters, int(config.get("server_round", 0)))
        with self._model_lock:
            set_weights(self._model, parameters)
            result = evaluate(self._model, self.data.val)
        metrics = {"accuracy": float(result.accuracy), **self._identity()}
        return float(result.loss), result.examples, metrics

    def _identity(self) -> dict[str, Scalar]:
        return {} if self.node_id is None else {"node_id": self.node_id}

    def _received(self, parameters: list[np.ndarray], server_round: int) -> None:
        with self._state:
            if server_round < self._last_round:
                return
            self._last_global = [np.array(p, copy=True) for p in parameters]
            self._last_round = server_round
            weights = [w.copy() for w in self._last_global]
        if self.on_global is not None:
            try:
                self.on_global(weights, server_round)
            except Exception:
                log.exception("on_global callback failed")

    # -- state for the daemon ---------------------------------------------------------------

    @property
    def last_global_weights(self) -> list[np.ndarray] | None:
        """The newest global model received (a copy), or None before the first one."""
        with self._state:
            return None if self._last_global is None else [w.copy() for w in self._last_global]

    @property
    def last_round(self) -> int:
        """Round of `last_global_weights` (0 before any)."""
        with self._state:
            return self._last_round

    @property
    def connected(self) -> bool:
        """True while a session with the wanted server is open."""
        with self._state:
            return self._connected

    @property
    def address(self) -> str | None:
        """The server address this client wants to be connected to."""
        with self._state:
            return self._target

    @property
    def running(self) -> bool:
        """True while the connection thread runs (it does from the first `connect` to `close`)."""
        return self._thread is not None and self._thread.is_alive()

    def local_model(self) -> Any:
        """A copy of the client's torch model (the last weights it trained or evaluated)."""
        with self._model_lock:
            return copy.deepcopy(self._model)

    # -- connection -------------------------------------------------------------------------

    def connect(self, address: str) -> None:
        """Connect to the server at ``address`` and stay connected until told otherwise."""
        check_address(address)
        with self._state:
            if self._closed:
                raise RuntimeError("MemberClient is closed")
            previous, self._target = self._target, address
            self._state.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="flower-member", daemon=True)
                self._thread.start()
        if previous is not None and previous != address:
            _cancel_thread_call(self._thread_id)

    def switch(self, address: str) -> None:
        """Leave the current server at once and join the one at ``address``."""
        self.connect(address)

    def disconnect(self) -> None:
        """Leave the current server (the client can `connect` again later)."""
        with self._state:
            self._target = None
            self._state.notify_all()
        _cancel_thread_call(self._thread_id)

    def close(self, timeout: float = 2.0) -> None:
        """Disconnect for good and end the connection thread."""
        with self._state:
            self._closed = True
        self.disconnect()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        _register_member_thread(self._thread_id, True)
        try:
            self._sessions()
        finally:
            _register_member_thread(self._thread_id, False)

    def _sessions(self) -> None:
        backoff = 0.1
        while True:
            with self._state:
                while self._target is None and not self._closed:
                    self._state.wait()
                if self._closed:
                    return
                address = self._target
            assert address is not None
            _forget_thread_call(self._thread_id)
            root = None if self.tls is None else self.tls.ca_cert
            if not wait_for_server(
                address, self.connect_timeout, lambda a=address: self._gone(a), root
            ):
                self._pause(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            with self._state:
                if self._target != address:
                    continue
                self._connected = True
            self.sessions += 1
            try:
                _client_app.start_client_internal(
                    server_address=address,
                    node_config={},
                    client=self.to_client(),
                    insecure=root is None,
                    root_certificates=root,
                    transport="grpc-bidi",
                    grpc_max_message_length=self.max_message_length,
                )
                backoff = 0.1  # a clean disconnect by the server
            except (Exception, SystemExit) as exc:
                log.debug("session with %s ended: %s", address, exc)
            finally:
                _forget_thread_call(self._thread_id)
                with self._state:
                    self._connected = False
            if self._gone(address):  # switched or disconnected: no back-off
                backoff = 0.1
                continue
            self._pause(backoff)
            backoff = min(backoff * 2, 2.0)

    def _gone(self, address: str) -> bool:
        with self._state:
            return self._closed or self._target != address

    def _pause(self, seconds: float) -> None:
        # Returns early when the target changes or the client closes.
        with self._state:
            target = self._target
            self._state.wait_for(lambda: self._closed or self._target != target, timeout=seconds)


# --- plain Flower, for the benchmark ------------------------------------------------------


class _PlainClient(NumPyClient):
    """The minimal NumPyClient plain Flower needs: same training, nothing around it."""

    def __init__(self, data: NodeData, spec: str, epochs: int, seed: int) -> None:
        self.data, self.model, self.epochs, self.seed = data, build_model(spec, seed), epochs, seed

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        return get_weights(self.model)

    def fit(self, parameters: list[np.ndarray], config: dict[str, Scalar]) -> Any:
        set_weights(self.model, parameters)
        train(self.model, self.data.train, epochs=self.epochs, seed=self.seed)
        return get_weights(self.model), len(self.data.train), {}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Scalar]) -> Any:
        set_weights(self.model, parameters)
        result = evaluate(self.model, self.data.val)
        return result.loss, result.examples, {"accuracy": result.accuracy}


def plain_flower_rounds(
    datas: list[NodeData],
    spec: str,
    rounds: int,
    *,
    local_epochs: int = 2,
    seed: int = 0,
    timeout: float = 60.0,
) -> list[float]:
    """Seconds per round of plain Flower: one server, ``len(datas)`` clients in threads.

    Each round is fit plus federated evaluation, as in a Mycelium group.
    """
    initial = get_weights(build_model(spec, seed=seed))
    stamps: list[float] = []

    def on_fit(server_round: int) -> dict[str, Scalar]:
        stamps.append(time.monotonic())
        return {}

    strategy = FedAvg(
        min_fit_clients=len(datas),
        min_evaluate_clients=len(datas),
        min_available_clients=len(datas),
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=on_fit,
        evaluate_metrics_aggregation_fn=_weighted_accuracy,
        fit_metrics_aggregation_fn=lambda _m: {},
    )
    manager = SimpleClientManager()
    server = Server(client_manager=manager, strategy=strategy)
    grpc_server = start_grpc_server(client_manager=manager, server_address="127.0.0.1:0")
    address = f"127.0.0.1:{str(grpc_server.bound_address).rpartition(':')[2]}"
    threads = [
        threading.Thread(
            target=_client_app.start_client_internal,
            kwargs={
                "server_address": address,
                "node_config": {},
                "client": _PlainClient(d, spec, local_epochs, seed + i).to_client(),
                "insecure": True,
            },
            daemon=True,
        )
        for i, d in enumerate(datas)
    ]
    try:
        for thread in threads:
            thread.start()
        if not manager.wait_for(len(datas), timeout=int(timeout)):
            raise TimeoutError(f"only {manager.num_available()} of {len(datas)} clients connected")
        server.fit(num_rounds=rounds, timeout=timeout)
        stamps.append(time.monotonic())
        server.disconnect_all_clients(timeout=5.0)
    finally:
        grpc_server.stop(0.2).wait(2.0)
        for thread in threads:
            thread.join(timeout=2.0)
    return [b - a for a, b in itertools.pairwise(stamps)]
