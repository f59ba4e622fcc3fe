"""Plain Flower, for the benchmark: one server, clients in threads, same training, nothing else."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
from flwr.common import Scalar, ndarrays_to_parameters
from flwr.compat.client import app as _client_app
from flwr.compat.client.numpy_client import NumPyClient
from flwr.server import Server
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import FedAvg
from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server

from mycelium_p2p.learning.builtin import ModelTask
from mycelium_p2p.learning.data import NodeData
from mycelium_p2p.learning.flower.adapter import TaskClient
from mycelium_p2p.learning.flower.setup import install
from mycelium_p2p.learning.flower.strategies import weighted_accuracy
from mycelium_p2p.learning.task import GuardedTask


def plain_flower_rounds(
    datas: list[NodeData],
    spec: str,
    rounds: int,
    *,
    local_epochs: int = 2,
    seed: int = 0,
    timeout: float = 60.0,
) -> list[float]:
    """Seconds per round of plain Flower: one server, ``len(datas)`` built-in clients in threads.

    Each round is fit plus federated evaluation, as in a Mycelium group.
    """
    tasks = [
        GuardedTask(ModelTask(d, spec, local_epochs=local_epochs, seed=seed + i))
        for i, d in enumerate(datas)
    ]
    clients = [TaskClient(t, seed + i) for i, t in enumerate(tasks)]
    return plain_client_rounds(clients, tasks[0].initial_parameters(), rounds, timeout=timeout)


def plain_client_rounds(
    clients: list[NumPyClient],
    initial: list[np.ndarray],
    rounds: int,
    *,
    timeout: float = 60.0,
) -> list[float]:
    """Seconds per round of plain Flower with these ``NumPyClient``s, each in a thread."""
    install()
    stamps: list[float] = []

    def on_fit(server_round: int) -> dict[str, Scalar]:
        stamps.append(time.monotonic())
        return {}

    strategy = FedAvg(
        min_fit_clients=len(clients),
        min_evaluate_clients=len(clients),
        min_available_clients=len(clients),
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
                "client": client.to_client(),
                "insecure": True,
            },
            daemon=True,
        )
        for client in clients
    ]
    try:
        for thread in threads:
            thread.start()
        if not manager.wait_for(len(clients), timeout=int(timeout)):
            raise TimeoutError(
                f"only {manager.num_available()} of {len(clients)} clients connected"
            )
        server.fit(num_rounds=rounds, timeout=timeout)
        stamps.append(time.monotonic())
        server.disconnect_all_clients(timeout=5.0)
    finally:
        grpc_server.stop(0.2).wait(2.0)
        for thread in threads:
            thread.join(timeout=2.0)
    return [b - a for a, b in itertools.pairwise(stamps)]
