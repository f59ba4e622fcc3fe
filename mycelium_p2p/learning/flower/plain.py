"""Plain Flower, for the benchmark: one server, clients in threads, same training, nothing else."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import numpy as np
from flwr.common import Scalar, ndarrays_to_parameters
from flwr.compat.client import app as _client_app
from flwr.compat.client.numpy_client import NumPyClient
from flwr.server import Server
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import FedAvg
from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server

from mycelium_p2p.learning.data import NodeData
from mycelium_p2p.learning.flower.setup import install
from mycelium_p2p.learning.flower.strategies import weighted_accuracy
from mycelium_p2p.learning.models import build_model, get_weights, set_weights
from mycelium_p2p.learning.train import evaluate, train


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
    install()
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
        evaluate_metrics_aggregation_fn=weighted_accuracy,
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
