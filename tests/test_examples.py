"""The examples in real networks: a registry and ``mycelium join --task`` processes.

- six nodes run the stock Flower client of ``examples/flower_cnn`` on label-shifted shards of two
  concepts: they end in pure groups, as accurate as the oracle (FedAvg within the true concepts,
  same model, same shards) within 0.03;
- two specs share one registry and one gossip network (the numpy task of
  ``examples/numpy_logreg`` and the built-in MLP): no group ever mixes them, each groups with its
  own kind, and the node that founds says why in the words of the specs;
- a factory that raises, returns the wrong type, or whose fit returns the wrong shapes stops
  ``join`` with one line naming the problem, before anything reaches the registry.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mycelium_p2p.experiment import baselines
from mycelium_p2p.learning.data import NodeData, load_node_data
from mycelium_p2p.registry_client import RegistryClient
from mycelium_p2p.testing.processes import ProcessGroup, mycelium_command
from tests.helpers import ROOT, RegistryProcess, wait_for

pytestmark = pytest.mark.slow

CNN = f"{ROOT}/examples/flower_cnn/cnn_client.py:client_fn"
LOGREG = f"{ROOT}/examples/numpy_logreg/logreg.py:task"
#: One torch thread per node process: six of them share two cores.
ENV = {"OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def write_shards(folder: Path, nodes: int, concepts: int) -> list[NodeData]:
    """One ``.npz`` per node with its training and validation images (the user's own data);
    the held-out test split stays here, for scoring. Made with the project's data helpers."""
    folder.mkdir(exist_ok=True)
    datas = [
        load_node_data(f"digits:label-shift:{concepts}", i, nodes, seed=0) for i in range(nodes)
    ]
    for index, data in enumerate(datas):
        np.savez(
            folder / f"site-{index}.npz",
            x=np.concatenate([data.train.x, data.val.x]),
            y=np.concatenate([data.train.y, data.val.y]),
            classes=np.int64(10),
        )
    return datas


def join(nodes: ProcessGroup, url: str, name: str, *learns: str) -> None:
    command = mycelium_command("join", "--bootstrap", url, "--preset", "test", "--name", name)
    nodes.start(name, [*command, *learns], env=ENV)


def groups_by_name(client: RegistryClient) -> dict[str, set[str]]:
    """Each group's members by node name (the registry's view)."""
    names = {n.id: n.name for n in client.nodes()}
    return {g.id: {names.get(m, m) for m in g.members} for g in client.groups()}


def import_example(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def group_models(gossip_address: str, groups: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """The latest model of every group, fetched from its leader as a probe does."""
    from mycelium_p2p.config import GossipConfig
    from mycelium_p2p.groups import GossipNode
    from mycelium_p2p.learning.models import weights_from_bytes

    observer = GossipNode("test-observer", GossipConfig.test(), observer=True)
    observer.start()
    try:
        assert observer.join([gossip_address], timeout=5.0)
        records = wait_for(
            lambda: observer.groups() if set(groups) <= set(observer.groups()) else None,
            30,
            what="every group's record",
        )
        models = {}
        for gid in groups:
            answer = observer.request_model(records[gid].leader_address, gid, 5.0)
            assert answer is not None, f"no model from the leader of {gid}"
            models[gid] = weights_from_bytes(answer[1])
        return models
    finally:
        observer.stop()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread in the test's own process, as in the nodes': on a loaded machine
    two spinning threads made each of the oracle's fits six times slower (3.6 s against 0.6 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cnn_oracle(module: Any, shards: Path, datas: list[NodeData], rounds: int) -> list[float]:
    """The oracle baseline with the example's own model: FedAvg within the true concept groups
    (capacity 5, as the nodes'), every node's accuracy on its own test split."""
    import torch

    torch.manual_seed(0)
    clients = [module.client_fn(data=str(shards / f"site-{i}.npz"), seed=str(i)) for i in
               range(len(datas))]  # fmt: skip
    accuracies = [0.0] * len(datas)
    for members in baselines.oracle_groups([d.concept for d in datas], capacity=5):
        weights = clients[members[0]].get_parameters({})
        for _ in range(rounds):
            updates = [clients[i].fit(weights, {}) for i in members]
            weights = fedavg([u[0] for u in updates], [u[1] for u in updates])
        for i in members:
            accuracies[i] = cnn_accuracy(module, weights, datas[i])
    return accuracies


def fedavg(models: list[list[np.ndarray]], examples: list[int]) -> list[np.ndarray]:
    """FedAvg: the models' arrays averaged, weighted by their training examples."""
    share = np.asarray(examples, dtype=np.float64) / sum(examples)
    return [
        np.tensordot(share, np.stack(arrays), axes=1).astype(arrays[0].dtype)
        for arrays in zip(*models, strict=True)
    ]


def cnn_accuracy(module: Any, weights: list[np.ndarray], data: NodeData) -> float:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    net = module.Net(1, 10)
    module.set_weights(net, weights)
    test = DataLoader(TensorDataset(torch.from_numpy(data.test.x), torch.from_numpy(data.test.y)))
    return float(module.test(net, test, torch.device("cpu"))[1])


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("one_torch_thread")
def test_six_stock_flower_clients_sort_themselves_as_well_as_the_oracle(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    datas = write_shards(shards, nodes=6, concepts=2)
    registry = RegistryProcess(tmp_path / "registry.db", extra=("--suspect-after", "5"))
    nodes = ProcessGroup(log_dir=tmp_path / "logs")
    client = RegistryClient(registry.url)
    concept = {f"site-{i}": d.concept for i, d in enumerate(datas)}
    try:
        for i in range(6):
            join(nodes, registry.url, f"site-{i}", "--task", CNN,
                 "--task-option", f"data={shards / f'site-{i}.npz'}",
                 "--task-option", f"seed={i}")  # fmt: skip

        def sorted_and_trained() -> dict[str, set[str]] | None:
            groups = groups_by_name(client)
            placed = sorted(n for members in groups.values() for n in members)
            pure = all(len({concept.get(n) for n in m}) == 1 for m in groups.values())
            rounds = [g.metrics.round for g in client.groups()]
            done = placed == sorted(concept) and pure and min(rounds, default=0) >= 20
            return groups if done else None

        groups = wait_for(sorted_and_trained, 420, interval=1.0, what="pure groups, 20 rounds")
        records = {g.id: g for g in client.groups()}
        spec = {g.model for g in records.values()}
        print("groups:", {gid: sorted(m) for gid, m in groups.items()}, "spec:", spec)
        assert len(spec) == 1 and spec.pop().startswith("cnn_client.client_fn:f4[16x1x3x3]")
        address = next(n.gossip_address for n in client.nodes())
        models = group_models(address, records)
    finally:
        nodes.stop()
        logs = [(tmp_path / "logs" / f"{name}.log").read_text() for name in nodes.names]
        registry.stop()
    module = import_example(ROOT / "examples/flower_cnn/cnn_client.py")
    ours = {
        name: cnn_accuracy(module, models[gid], datas[int(name.split("-")[1])])
        for gid, members in groups.items()
        for name in members
    }
    mean = float(np.mean(list(ours.values())))
    rounds = min(min(r.metrics.round for r in records.values()), 40)
    oracle = cnn_oracle(module, shards, datas, rounds)
    mlp = baselines.oracle(
        baselines.ExperimentData(tuple(concept), tuple(concept), tuple(datas)), rounds=rounds
    )
    print(f"mycelium mean accuracy {mean:.3f} ({ {k: round(v, 3) for k, v in ours.items()} })")
    print(f"oracle, same CNN, {rounds} rounds: {np.mean(oracle):.3f}; built-in MLP: {mlp.mean:.3f}")
    assert all("compared by the 'accuracy' metric" in log for log in logs)
    assert mean >= float(np.mean(oracle)) - 0.03


LEADS = "1 group uses spec mlp:1x8x8:10; none with spec logreg:f4[64x10],f4[10]: founding one"


@pytest.mark.timeout(400)
def test_two_specs_share_a_network_and_never_a_group(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    write_shards(shards, nodes=2, concepts=1)
    registry = RegistryProcess(tmp_path / "registry.db")
    nodes = ProcessGroup(log_dir=tmp_path / "logs")
    client = RegistryClient(registry.url)
    mixed: list[str] = []

    def watch(check: Callable[[], Any]) -> Callable[[], Any]:
        """``check``, after noting any group whose members do not all share its spec."""

        def probe() -> Any:
            model = {n.id: n.model for n in client.nodes()}
            for g in client.groups():
                if any(model.get(m) != g.model for m in g.members):
                    mixed.append(f"{g.id} ({g.model}): {[model.get(m) for m in g.members]}")
            return check()

        return probe

    try:
        for i in range(2):
            join(nodes, registry.url, f"mlp-{i}",
                 *("--data", "digits:iid", "--node-index", str(i), "--num-nodes", "2"))  # fmt: skip
        wait_for(watch(lambda: [len(m) for m in groups_by_name(client).values()] == [2]), 120,
                 interval=0.3, what="the two MLP nodes in one group")  # fmt: skip
        for i in range(2):
            join(nodes, registry.url, f"logreg-{i}", "--task", LOGREG,
                 "--task-option", f"data={shards / f'site-{i}.npz'}")  # fmt: skip

        def by_kind() -> bool:
            groups = sorted(sorted(m) for m in groups_by_name(client).values())
            return groups == [["logreg-0", "logreg-1"], ["mlp-0", "mlp-1"]]

        wait_for(watch(by_kind), 120, interval=0.3, what="each spec in a group of its own")
        started = time.monotonic()
        while time.monotonic() - started < 10:  # a while longer: still never mixed
            watch(lambda: None)()
            time.sleep(0.3)
        specs = {g.model for g in client.groups()}
        shown = subprocess.run(
            mycelium_command("status", "--bootstrap", registry.url),
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        ).stdout  # fmt: skip
    finally:
        nodes.stop()
        logs = {name: (tmp_path / "logs" / f"{name}.log").read_text() for name in nodes.names}
        registry.stop()
    print(shown)
    assert specs == {"mlp:1x8x8:10", "logreg:f4[64x10],f4[10]"}
    assert not mixed, mixed
    assert any(LEADS in logs[f"logreg-{i}"] for i in range(2)), logs
    assert not any("refused" in log for log in logs.values())  # nobody even tried across specs
    for spec in specs:
        assert f"Groups (1) with spec {spec}" in shown and f"Nodes (2) with spec {spec}" in shown


BAD_FACTORIES = """
    import numpy as np
    from flwr.client import NumPyClient

    def raises():
        raise RuntimeError("no data here")

    def wrong_type():
        return 42

    class Shifty(NumPyClient):
        def get_parameters(self, config):
            return [np.zeros(3, np.float32)]

        def fit(self, parameters, config):
            return [np.zeros(4, np.float32)], 10, {}

        def evaluate(self, parameters, config):
            return 0.5, 10, {"accuracy": 0.5}

    def wrong_shapes():
        return Shifty()
    """


@pytest.mark.timeout(300)
def test_a_broken_factory_stops_join_with_one_line_and_joins_nothing(tmp_path: Path) -> None:
    factories = tmp_path / "factories.py"
    factories.write_text(textwrap.dedent(BAD_FACTORIES))
    expected = {
        "raises": "the factory raised RuntimeError: no data here",
        "wrong_type": "the factory returned a value of type int: expected a task",
        "wrong_shapes": "fit returned shape (4,) for array 0; the spec says (3,)",
    }
    registry = RegistryProcess(tmp_path / "registry.db")
    nodes = ProcessGroup(log_dir=tmp_path / "logs")
    client = RegistryClient(registry.url)
    try:
        for name in expected:
            join(nodes, registry.url, name, "--task", f"{factories}:{name}")
        for process in nodes.processes:
            process.wait(timeout=120)
        registered, groups = client.nodes(), client.groups()
    finally:
        nodes.stop()
        outputs = {name: nodes.log_tail(i, 200) for i, name in enumerate(nodes.names)}
        registry.stop()
    for (name, message), process in zip(expected.items(), nodes.processes, strict=True):
        output = outputs[name]
        print(f"{name}: exit {process.returncode}: {output.splitlines()[-1]}")
        errors = [line for line in output.splitlines() if line.startswith("Error:")]
        assert process.returncode == 1
        assert len(errors) == 1 and errors[0].startswith(f"Error: task {factories}:{name}: ")
        assert message in errors[0]
        assert "Traceback" not in output
    assert registered == [] and groups == []  # nothing reached the registry
