"""The aggregation strategies a group can use: one table of names, and the checks around them.

Every strategy is Flower's own; `make_strategy` builds one by name with the settings every
group uses (all connected clients, failures accepted, the initial model given). `CheckedStrategy`
wraps it: results that fail `admission` or updates that fail `models.check_update` never reach
it, and Krum/Bulyan fall back to the median when a round has too few updates for their
guarantee.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateRes,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
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

from mycelium_p2p.learning import admission
from mycelium_p2p.learning.admission import MemberLimits, Refusal
from mycelium_p2p.learning.models import check_update

log = logging.getLogger("mycelium_p2p.learning.flower")

#: Every strategy a group can use, by name: Flower's class and the settings it gets here.
BUILDERS: dict[str, tuple[type[Strategy], dict[str, Any]]] = {
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
STRATEGIES: tuple[str, ...] = tuple(BUILDERS)


# The groups' default, chosen by `mycelium bench byzantine` (docs/security.md): against one
# poisoning member of five the median lost at most 0.018 accuracy where FedAvg lost 0.69-0.82,
# it cost nothing on clean runs, and it needs no f (it holds for any minority of attackers).
DEFAULT_STRATEGY = "median"


class CheckedStrategy(Strategy):
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


def weighted_accuracy(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
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
        "evaluate_metrics_aggregation_fn": weighted_accuracy,
        "fit_metrics_aggregation_fn": lambda _metrics: {},
        "accept_failures": True,
    }
    if key not in BUILDERS:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    cls, extra = BUILDERS[key]
    kwargs = {**common, **extra, **(options or {})}
    if cls is FaultTolerantFedAvg:
        kwargs.pop("accept_failures", None)
    return cls(**kwargs)
