"""Poisoning members and the measurement of how each group strategy withstands them.

`PoisoningClient`
    A `flower.MemberClient` that trains honestly, then replaces its update by an attack. The
    attacks are built to pass `models.check_update` (no NaN, right shapes, global norm under
    the server's ``max_norm_ratio`` bound), since a norm bound alone is not a defence:

    - ``scaled``: the honest delta times ``scale`` (default 100), cut so that the weights' norm
      stays at ``margin`` (default 0.9) of the bound;
    - ``signflip``: the honest delta times ``-scale`` (default 10), cut the same way;
    - ``random``: random Gaussian weights with the norm of an honest update (plausible).

`measure`
    One run of a real `GroupServer` and real `MemberClient`s over real gRPC in this process:
    ``members`` nodes on ``digits:iid`` of which ``attackers`` poison, ``rounds`` rounds, then the
    accuracy of the global model on the held-out test set.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .data import NodeData, load_node_data
from .flower import GroupServer, MemberClient, RoundResult
from .models import build_model, get_weights, model_spec, set_weights
from .train import evaluate

ATTACKS = ("scaled", "signflip", "random")
CLEAN = "none"
DEFAULT_SCALE = {"scaled": 100.0, "signflip": 10.0, "random": 1.0}


def _norm(weights: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.square(w.astype(np.float64)).sum()) for w in weights))


def _dot(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return sum(
        float((x.astype(np.float64) * y.astype(np.float64)).sum())
        for x, y in zip(a, b, strict=True)
    )


def largest_step(base: list[np.ndarray], direction: list[np.ndarray], limit: float) -> float:
    """The largest ``s >= 0`` with ``||base + s * direction|| <= limit``.

    Solves ``s^2 |v|^2 + 2 s <g, v> + |g|^2 - limit^2 = 0`` for its non-negative root; returns
    0 when ``base`` is already past ``limit`` and ``inf`` when ``direction`` is zero.
    """
    vv = _dot(direction, direction)
    gv = _dot(base, direction)
    c = _dot(base, base) - limit * limit
    if c > 0:
        return 0.0
    if vv == 0.0:
        return math.inf
    return (-gv + math.sqrt(gv * gv - vv * c)) / vv


def poison(
    attack: str,
    global_weights: list[np.ndarray],
    honest_weights: list[np.ndarray],
    *,
    rng: np.random.Generator,
    scale: float | None = None,
    max_norm_ratio: float = 10.0,
    margin: float = 0.9,
) -> list[np.ndarray]:
    """The poisoned weights a member sends instead of ``honest_weights`` (pure).

    Parameters
    ----------
    attack : str
        One of `ATTACKS`.
    global_weights : list of np.ndarray
        The round's global model (what the server checks the norm against).
    honest_weights : list of np.ndarray
        What honest local training produced from ``global_weights``.
    rng : np.random.Generator
        Randomness for the ``random`` attack.
    scale : float or None
        Factor on the honest delta (default: `DEFAULT_SCALE` of the attack).
    max_norm_ratio : float
        The server's `check_update` bound the attack stays under (default: 10).
    margin : float
        Fraction of that bound used at most (default: 0.9).

    Raises
    ------
    ValueError
        For an unknown attack or a bad margin.
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")
    if not 0 < margin <= 1:
        raise ValueError("margin must be in (0, 1]")
    factor = DEFAULT_SCALE[attack] if scale is None else float(scale)
    base = [np.asarray(g, dtype=np.float64) for g in global_weights]
    honest = [np.asarray(w, dtype=np.float64) for w in honest_weights]
    dtypes = [np.asarray(w).dtype for w in honest_weights]
    if attack == "random":
        noise = [rng.standard_normal(w.shape) for w in honest]
        target = factor * _norm(honest)
        out = [n * (target / max(_norm(noise), 1e-12)) for n in noise]
    else:
        sign = 1.0 if attack == "scaled" else -1.0
        direction = [sign * (w - g) for w, g in zip(honest, base, strict=True)]
        limit = margin * max_norm_ratio * _norm(base)
        step = min(abs(factor), largest_step(base, direction, limit))
        out = [g + step * v for g, v in zip(base, direction, strict=True)]
    return [o.astype(d) for o, d in zip(out, dtypes, strict=True)]


class PoisoningClient(MemberClient):
    """A member that trains honestly and then sends a poisoned update (see `poison`).

    Parameters
    ----------
    data, spec
        As for `MemberClient`.
    attack : str
        One of `ATTACKS`.
    scale : float or None
        Factor on the honest delta (default: the attack's own, `DEFAULT_SCALE`).
    max_norm_ratio : float
        The server's norm bound the attack stays under (default: 10).
    seed : int
        Seeds local training and the attack's randomness (default: 0).
    **kwargs
        Passed to `MemberClient`.
    """

    def __init__(
        self,
        data: NodeData,
        spec: str,
        *,
        attack: str = "signflip",
        scale: float | None = None,
        max_norm_ratio: float = 10.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")
        super().__init__(data, spec, seed=seed, **kwargs)
        self.attack = attack
        self.scale = scale
        self.max_norm_ratio = max_norm_ratio
        self._rng = np.random.default_rng([seed, 0xBAD])
        self.poisoned = 0

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        weights, examples, metrics = super().fit(parameters, config)
        bad = poison(
            self.attack,
            parameters,
            weights,
            rng=self._rng,
            scale=self.scale,
            max_norm_ratio=self.max_norm_ratio,
        )
        self.poisoned += 1
        return bad, examples, metrics


@dataclass(frozen=True)
class RunResult:
    """One measured run: the global model's accuracy on the held-out test set after ``rounds``.

    ``rejected`` counts updates dropped by `check_update`, ``fallbacks`` rounds that Krum or
    Bulyan left to the median for want of updates.
    """

    strategy: str
    attack: str
    seed: int
    rounds: int
    members: int
    attackers: int
    accuracy: float
    rejected: int
    fallbacks: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    strategy: str,
    attack: str | None,
    seed: int = 0,
    rounds: int = 8,
    *,
    members: int = 5,
    attackers: int = 1,
    data: str = "digits:iid",
    local_epochs: int = 1,
    strategy_options: dict[str, Any] | None = None,
    timeout: float = 120.0,
) -> RunResult:
    """Run one group for ``rounds`` rounds and return its global model's test accuracy.

    Parameters
    ----------
    strategy : str
        A `flower.STRATEGIES` name.
    attack : str or None
        One of `ATTACKS`, or None / ``"none"`` for a clean run (every member honest).
    seed : int
        Seeds data partition, model initialisation and training (default: 0).
    rounds : int
        Rounds to run (default: 8).
    members, attackers : int
        Group size and how many of them poison (defaults: 5, 1; 0 attackers when clean).
    data : str
        Data spec (default: "digits:iid"); accuracy is on node 0's held-out test split.
    local_epochs : int
        Local epochs per round (default: 1).
    strategy_options : dict or None
        Overrides for the Flower strategy (default: None).
    timeout : float
        Seconds the whole run may take before TimeoutError (default: 120).
    """
    clean = attack in (None, CLEAN)
    if not clean and attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: {CLEAN}, {', '.join(ATTACKS)}")
    if rounds < 1 or members < 1 or not 0 <= attackers <= members:
        raise ValueError("need rounds >= 1, members >= 1 and 0 <= attackers <= members")
    n_bad = 0 if clean else attackers
    datas = [load_node_data(data, i, members, seed=seed) for i in range(members)]
    spec = model_spec("mlp", datas[0].input_shape, datas[0].classes)
    initial = get_weights(build_model(spec, seed=seed))
    done = threading.Event()
    final: list[RoundResult] = []

    def on_round(result: RoundResult) -> None:
        if result.round == rounds and not done.is_set():
            final.append(result)
            done.set()

    started = time.monotonic()
    server = GroupServer(
        initial,
        strategy=strategy,
        min_clients=members,
        on_round=on_round,
        strategy_options=strategy_options,
    )
    clients: list[MemberClient] = []
    try:
        address = server.start()
        for i, node in enumerate(datas):
            # The attackers are the last members, so node 0 (whose test split is used) is honest.
            client_seed = seed * 1000 + i
            if i >= members - n_bad:
                client: MemberClient = PoisoningClient(
                    node, spec, attack=str(attack), seed=client_seed, local_epochs=local_epochs
                )
            else:
                client = MemberClient(node, spec, seed=client_seed, local_epochs=local_epochs)
            client.connect(address)
            clients.append(client)
        if not done.wait(timeout):
            raise TimeoutError(f"{strategy}/{attack}: {server.round} of {rounds} rounds in time")
    finally:
        server.stop()
        for client in clients:
            client.close()
    model = build_model(spec)
    set_weights(model, final[0].weights)
    accuracy = evaluate(model, datas[0].test).accuracy
    return RunResult(
        strategy=strategy,
        attack=CLEAN if clean else str(attack),
        seed=seed,
        rounds=rounds,
        members=members,
        attackers=n_bad,
        accuracy=float(accuracy),
        rejected=len(server.rejected),
        fallbacks=server.fallbacks,
        seconds=time.monotonic() - started,
    )
