"""Tasks: the spec, the guard around every call, the NumPyClient adapter, loading and checking."""

from __future__ import annotations

import logging
import math
import random
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from mycelium_p2p.gossip.messages import check_meta
from mycelium_p2p.groups import GroupRecord
from mycelium_p2p.learning.builtin import ModelTask
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.learning.flower.adapter import ClientTask
from mycelium_p2p.learning.loader import load_task, task_name
from mycelium_p2p.learning.task import (
    MAX_SPEC,
    DataSizes,
    Fitted,
    GuardedTask,
    Scored,
    TaskError,
    TaskSpec,
    check_task,
)
from mycelium_p2p.meta import NodeMeta
from mycelium_p2p.node.parts.choice import founding_reason
from mycelium_p2p.node.state import GossipView
from mycelium_p2p.node_config import ConfigError, load_config

F4 = np.float32


class Toy:
    """A tiny well-behaved task: one weight vector, a score that rises as it nears ``target``."""

    probe_samples: int | None = None

    def __init__(self, shape: tuple[int, ...] = (3,), name: str = "toy") -> None:
        self.shape = shape
        self.spec = TaskSpec.of(name, self.initial_parameters())
        self.fits = 0

    def initial_parameters(self) -> list[np.ndarray]:
        return [np.zeros(self.shape, F4)]

    def fit(self, parameters: list[np.ndarray], config: Any) -> Fitted:
        self.fits += 1
        return Fitted([parameters[0] + 0.5], 8, 0.25)

    def evaluate(self, parameters: list[np.ndarray], split: str) -> Scored:
        distance = float(np.abs(parameters[0] - 1.0).mean())
        return Scored(max(0.0, 1.0 - distance), distance, 4)

    def sizes(self) -> DataSizes:
        return DataSizes(8, 4, 4)


# --- the spec -------------------------------------------------------------------------------


def test_a_spec_names_every_array_or_digests_them_when_too_long() -> None:
    small = TaskSpec.of("logreg", [np.zeros((64, 10), F4), np.zeros(10, F4)])
    assert small.key == "logreg:f4[64x10],f4[10]"
    assert small.parameter_count == 650 and small.nbytes == 2600
    many = [np.zeros((i + 1, 3), F4) for i in range(40)]
    big = TaskSpec.of("a name with spaces/and:colons" * 3, many)
    print("digest form:", big.key)
    assert len(big.key) <= MAX_SPEC and big.key.startswith("a_name_with_spaces_and_colons")
    assert ":40a2460p:" in big.key
    # Equal keys mean equal shapes and dtypes; one dtype or one dimension apart differ.
    other = [a.astype(np.float64) if i == 7 else a for i, a in enumerate(many)]
    assert TaskSpec.of("n", other).key != TaskSpec.of("n", many).key
    assert TaskSpec.of("n", [*many[:-1], np.zeros((40, 4), F4)]).key != TaskSpec.of("n", many).key
    assert big.mismatch(many) is None
    assert "shape (2,)" in (small.mismatch([np.zeros((64, 10), F4), np.zeros(2, F4)]) or "")
    assert "dtype float64" in (small.mismatch([np.zeros((64, 10)), np.zeros(10, F4)]) or "")
    assert "1 arrays" in (small.mismatch([np.zeros(10, F4)]) or "")


@pytest.mark.parametrize(
    ("data", "model", "key"),
    [
        ("digits:iid", "mlp", "mlp:1x8x8:10"),
        ("digits:label-shift:2", "cnn", "cnn:1x8x8:10"),
        ("synthetic", "mlp", "mlp:20:3"),
    ],
)
def test_built_in_tasks_keep_their_spec_strings(data: str, model: str, key: str) -> None:
    task = ModelTask(load_node_data(data, 0, 4, seed=0), model)
    assert task.spec.key == key
    report = check_task(task)
    assert report.spec.key == key and report.sizes.train == report.fitted.examples
    assert 0.0 <= report.scored.accuracy <= 1.0 and report.scored.examples == report.sizes.val
    assert task.describe()["train"] == report.sizes.train  # what the registry always got


# --- the guard ------------------------------------------------------------------------------


class WrongShapes(Toy):
    """Its fit answers with an array of another shape from the ``breaks_at``-th call on."""

    def __init__(self, breaks_at: int = 1) -> None:
        super().__init__()
        self.breaks_at = breaks_at

    def fit(self, parameters: list[np.ndarray], config: Any) -> Fitted:
        self.fits += 1
        if self.fits >= self.breaks_at:
            return Fitted([np.zeros(4, F4)], 8)
        return Fitted([parameters[0] + 0.5], 8, 0.25)


def test_the_guard_names_what_a_task_got_wrong() -> None:
    errors: list[str] = []
    guarded = GuardedTask(WrongShapes(), on_error=errors.append)
    with pytest.raises(TaskError, match=r"fit returned shape \(4,\) for array 0; the spec says"):
        guarded.fit(guarded.initial_parameters(), {})
    assert errors and "shape (4,)" in errors[0]

    class Raises(Toy):
        def evaluate(self, parameters: list[np.ndarray], split: str) -> Scored:
            raise ZeroDivisionError("division by zero")

    with pytest.raises(TaskError, match="evaluate raised ZeroDivisionError: division by zero"):
        GuardedTask(Raises()).evaluate([np.zeros(3, F4)], "val")

    class Percent(Toy):
        def evaluate(self, parameters: list[np.ndarray], split: str) -> Scored:
            return Scored(93.0, 0.1, 4)

    with pytest.raises(TaskError, match=r"accuracy 93.0, not a number in \[0, 1\]"):
        GuardedTask(Percent()).evaluate([np.zeros(3, F4)], "val")

    class Greedy(Toy):
        probe_samples = 2

    with pytest.raises(TaskError, match="used 4 validation examples; probe_samples is 2"):
        GuardedTask(Greedy()).evaluate([np.zeros(3, F4)], "val")

    with pytest.raises(TaskError, match="not a task"):
        GuardedTask(object())


def test_a_hostile_model_fails_a_round_not_the_task() -> None:
    """A group's model with NaN (or one that makes training diverge) is refused before the
    task's code sees it; the node's task is not blamed for it (it would stop the node)."""
    errors: list[str] = []
    toy = Toy()
    guarded = GuardedTask(toy, on_error=errors.append)
    with pytest.raises(ValueError, match="NaN") as caught:
        guarded.fit([np.array([np.nan, 0, 0], F4)], {})
    assert not isinstance(caught.value, TaskError) and toy.fits == 0 and not errors
    with pytest.raises(ValueError, match="do not fit the spec"):
        guarded.evaluate([np.zeros(5, F4)], "val")
    # An infinite loss is the worst loss, not a broken task.

    class Diverges(Toy):
        def evaluate(self, parameters: list[np.ndarray], split: str) -> Scored:
            return Scored(0.0, math.inf, 4)

    assert GuardedTask(Diverges()).evaluate([np.zeros(3, F4)], "val").loss == 1e12
    assert not errors


# --- a stock NumPyClient --------------------------------------------------------------------


def stock_client(with_accuracy: bool = True) -> Any:
    from flwr.client import NumPyClient

    class Client(NumPyClient):
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return [np.zeros((2, 2), F4), np.zeros(2, np.float64)]

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return [p + 1 for p in parameters], 30, {"train_loss": 0.5}

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            loss = float(np.abs(parameters[0]).sum())
            return loss, 10, {"accuracy": 0.75} if with_accuracy else {}

    return Client()


def test_a_numpy_client_is_adapted_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    task = GuardedTask(ClientTask(stock_client(), "mod.client_fn"))
    assert task.spec.key == "mod.client_fn:f4[2x2],f8[2]"
    assert task.sizes() == DataSizes(0, 0, 0)  # learned from its answers
    report = check_task(task)
    assert report.fitted.examples == 30 and report.fitted.loss == 0.5
    assert report.scored.accuracy == 0.75 and task.sizes() == DataSizes(30, 10, 10)
    assert "compared by the 'accuracy' metric" in caplog.text

    caplog.clear()
    by_loss = GuardedTask(ClientTask(stock_client(with_accuracy=False).to_client().numpy_client,
                                     "m.f"))  # fmt: skip
    scores = [by_loss.evaluate([np.full((2, 2), v, F4), np.zeros(2)], "val") for v in (0, 1, 2)]
    assert [s.loss for s in scores] == [0.0, 4.0, 8.0]
    assert [s.accuracy for s in scores] == [1.0, math.exp(-4), math.exp(-8)]  # ranks as -loss
    assert caplog.text.count("compared by the loss") == 1  # the choice is logged once


# --- loading --------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


TOY_MODULE = """
    from tests.test_tasks import Toy, WrongShapes

    def good(shape="3"):
        return Toy((int(shape),))

    def raises():
        raise RuntimeError("no data here")

    def wrong_type():
        return {"model": "nope"}

    def wrong_shapes():
        return WrongShapes()
    """


def test_load_a_factory_from_a_file_or_a_module(tmp_path: Path) -> None:
    write(tmp_path / "helper_mod.py", "SHAPE = 5\n")
    path = write(
        tmp_path / "user_task.py",
        """
        from helper_mod import SHAPE  # a neighbour of the file
        from tests.test_tasks import Toy

        def factory(name="x"):
            return Toy((SHAPE,), name)
        """,
    )
    task = load_task(f"{path}:factory", {"name": "mine"})
    assert task.spec.key == "mine:f4[5]"
    assert load_task("tests.test_tasks:Toy").spec.key == "toy:f4[3]"
    assert task_name(f"{path}:factory") == task_name("user_task:factory") == "user_task.factory"


@pytest.mark.parametrize(
    ("reference", "options", "message"),
    [
        ("{dir}/tasks.py:raises", {}, "the factory raised RuntimeError: no data here"),
        (
            "{dir}/tasks.py:wrong_type",
            {},
            "the factory returned a value of type dict: expected a task",
        ),
        ("{dir}/tasks.py:good", {"shape": "3", "bogus": "1"}, "unexpected keyword argument"),
        ("{dir}/tasks.py:missing", {}, "has no attribute 'missing'"),
        ("{dir}/nothere.py:f", {}, "no file"),
        ("no_such_module_here:f", {}, "no module 'no_such_module_here'"),
        ("just-a-name", {}, "must be module:attribute"),
    ],
)
def test_a_task_that_does_not_load_is_one_line(
    tmp_path: Path, reference: str, options: dict[str, str], message: str
) -> None:
    write(tmp_path / "tasks.py", TOY_MODULE)
    with pytest.raises(TaskError, match=message) as caught:
        load_task(reference.format(dir=tmp_path), options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("raises", "the factory raised RuntimeError: no data here"),
        ("wrong_type", "the factory returned a value of type dict"),
        ("wrong_shapes", r"fit returned shape \(4,\) for array 0; the spec says \(3,\)"),
    ],
)
def test_task_check_names_the_problem_in_one_line(
    tmp_path: Path, factory: str, message: str
) -> None:
    write(tmp_path / "tasks.py", TOY_MODULE)
    result = CliRunner().invoke(main, ["task", "check", f"{tmp_path}/tasks.py:{factory}"])
    print(result.output)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: task ")
    assert "Traceback" not in result.output
    assert re.search(message, lines[0])


def test_task_check_prints_the_spec_and_the_times(tmp_path: Path) -> None:
    write(tmp_path / "tasks.py", TOY_MODULE)
    result = CliRunner().invoke(
        main, ["task", "check", f"{tmp_path}/tasks.py:good", "--task-option", "shape=6"]
    )
    print(result.output)
    assert result.exit_code == 0, result.output
    for expected in ("spec        toy:f4[6]", "parameters  6 ", "fit ", "probe ", "ok:"):
        assert expected in result.output
    bad = CliRunner().invoke(main, ["task", "check", "x.py:f", "--task-option", "novalue"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output


# --- the node's side ------------------------------------------------------------------------


def test_task_settings_come_from_flags_environment_and_files(tmp_path: Path) -> None:
    toml = write(tmp_path / "node.toml", '[learning]\ntask = "a.py:f"\ntask_options = {x = "1"}\n')
    assert load_config(toml_path=toml, env={}).learning.task_options == {"x": "1"}
    env = {"MYCELIUM_TASK": "b.py:g", "MYCELIUM_TASK_OPTIONS": "data=a.npz,epochs=2"}
    learning = load_config(toml_path=toml, env=env).learning
    assert learning.task == "b.py:g" and learning.task_options == {"data": "a.npz", "epochs": "2"}
    flags = load_config({"task_options": {"y": "2"}}, toml_path=toml, env=env).learning
    assert flags.task_options == {"y": "2"}
    with pytest.raises(
        ConfigError, match=r"setting task_options \(config file .*\): expected text, got"
    ):
        load_config(toml_path=write(tmp_path / "b.toml", "task_options = {x = 1}\n"), env={})
    with pytest.raises(ConfigError, match=r"task_options .*bad key"):
        load_config({"task_options": {"not an identifier": "1"}}, env={})


@dataclass
class Member:
    id: str
    group: str
    status: str = "alive"

    @property
    def node_meta(self) -> NodeMeta:
        return NodeMeta(group=self.group)


def test_founding_says_which_specs_the_other_groups_use() -> None:
    records = {f"g{i}": GroupRecord(f"g{i}", model="mlp:1x8x8:10") for i in range(3)}
    records["gz"] = GroupRecord("gz", model="mlp:1x8x8:10")  # a zombie: nobody is in it
    members = [Member(f"n{i}", f"g{i}") for i in range(3)]
    view = GossipView("me", members, records)  # type: ignore[arg-type]
    text = founding_reason(view, "logreg:f4[64x10],f4[10]")
    assert (
        text
        == "3 groups use spec mlp:1x8x8:10; none with spec logreg:f4[64x10],f4[10]: founding one"
    )
    assert founding_reason(GossipView("me", [], {}), "mlp:20:3") == (
        "no groups yet: founding one with spec mlp:20:3"
    )
    # A live group of its own spec that the node passed over (its own stale record, one the
    # registry refused it): "none with spec" would be false, the policy's reason stands.
    assert founding_reason(view, "mlp:1x8x8:10") is None
    many = {f"h{i}": GroupRecord(f"h{i}", model=f"spec-{i % 4}-" + "x" * 120) for i in range(9)}
    crowd = GossipView("me", [Member(f"m{i}", f"h{i}") for i in range(9)], many)  # type: ignore[arg-type]
    long = founding_reason(crowd, "y" * 128)
    print(long)
    assert (
        long is not None and len(long) <= 200 and "4 use other specs" in long
    )  # the registry's bound on a reason


def test_the_learner_times_probes_and_announces_them_within_the_meta_cap() -> None:
    from mycelium_p2p.config import GossipConfig
    from mycelium_p2p.node.flower_learning import FlowerLearning, FlowerSettings

    task = Toy((4,), name="n" * 80)
    task.spec = TaskSpec("k" * MAX_SPEC, task.spec.arrays)  # the longest spec there can be
    learner = FlowerLearning(task, FlowerSettings(), lambda _r: None, random.Random(0),
                             "node-1", lambda _n: None)  # fmt: skip
    try:
        assert learner.probe_ms() >= 1  # the first probe ran at start
        learner.train_local()
        assert learner.score_weights([np.ones(4, F4)]) == 1.0
        sizes = learner.sizes()
        assert sizes["train"] == 8 and sizes["val"] == 4 and sizes["probe_ms"] >= 1
        assert learner.summary()["probe_ms"] >= 1 and learner.val_size == 4
        meta = NodeMeta(name="n" * 64, group="g-12345678", model=learner.spec,
                        flower_address="255.255.255.255:65535", accuracy=0.123456789, round=2**40,
                        **sizes)  # fmt: skip
        check_meta(meta.to_map(), GossipConfig.lan().max_meta_bytes)  # raises when too big
        assert NodeMeta.from_map(meta.to_map()).probe_ms == sizes["probe_ms"]
    finally:
        learner.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("breaks_at", "where"), [(2, "local training"), (3, "a group round on the Flower thread")]
)
def test_a_task_that_breaks_while_running_stops_its_node_with_one_line(
    caplog: pytest.LogCaptureFixture, breaks_at: int, where: str
) -> None:
    """Fit 1 is the first local training; 2 the second look before founding; 3 the first round
    of the group it founded."""
    from bootstrap.server import cluster_registry
    from mycelium_p2p.lifecycle import Phase
    from mycelium_p2p.node_config import NodeConfig
    from mycelium_p2p.registry_client import RegistryClient
    from mycelium_p2p.testing.local_cluster import LocalCluster
    from tests.helpers import wait_for

    caplog.set_level(logging.INFO)
    with LocalCluster([WrongShapes(breaks_at)], NodeConfig.test(), registry=cluster_registry) as c:
        node = c.nodes[0]
        wait_for(lambda: node.phase is Phase.STOPPED, 60, what=f"the node to stop ({where})")
        with RegistryClient(c.url) as client:
            in_groups = [m for g in client.groups() for m in g.members]
    print(where, "->", node.failure)
    assert node.failure == (
        "its task failed: fit returned shape (4,) for array 0; the spec says (3,)"
    )
    assert node.id not in in_groups
    failed = [r for r in caplog.records if "its task failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None  # one line, no traceback
    assert "contained" not in caplog.text
    assert ("(founded), Flower at" in caplog.text) == (breaks_at == 3)  # it led a group first


_LONG = {f"key-{i}-" + "k" * 80: "v" * 5000 for i in range(40)}
_ODD = {"nested": {"a": [1, 2]}, "huge": 10**30, "nan": math.nan, "": "empty key"}
# Control characters take six bytes each once escaped, an emoji four to twelve.
_ESCAPED = {f"{i}" + "\x00" * 70: ("\x00", "\U0001f344")[i % 2] * 5000 for i in range(20)}


@pytest.mark.parametrize(
    "said", [_LONG, {**_ODD, **_LONG}, _ESCAPED], ids=["long", "odd", "escaped"]
)
def test_what_a_task_says_about_itself_always_fits_the_registry(said: dict[Any, Any]) -> None:
    """A task's describe() goes to the registry at registration: whatever it returns, the node
    sends a flat map the registry accepts (else the node could never register)."""
    from mycelium_p2p.node.flower_learning import FlowerLearning, FlowerSettings
    from mycelium_p2p.registry_api import flat_map_problem

    class Chatty(Toy):
        def describe(self) -> dict[Any, Any]:
            return said

    learner = FlowerLearning(Chatty(), FlowerSettings(), lambda _r: None, random.Random(0),
                             "node-1", lambda _n: None)  # fmt: skip
    try:
        summary = learner.summary()
        print(len(summary), "keys,", flat_map_problem(summary))
        assert flat_map_problem(summary) is None
        assert summary["train"] == 8 and summary["probe_ms"] >= 1
        assert summary["description"]  # what the registry shows when nothing else fits
    finally:
        learner.close()


def test_only_a_built_in_task_switches_its_data() -> None:
    """A node's data can change at run time (a drift): the built-in task switches it, between
    two calls; a task that loads its own data cannot, and says so."""
    guarded = GuardedTask(ModelTask(load_node_data("digits:label-shift:2", 0, 4, seed=0), "mlp"))
    before = guarded.sizes()
    guarded.switch_data(load_node_data("digits:label-shift:2", 1, 2, seed=0))
    assert guarded.sizes() != before and guarded.spec.key == "mlp:1x8x8:10"
    with pytest.raises(ValueError, match="new data needs model mlp:20:3, the task runs mlp:1x8"):
        guarded.switch_data(load_node_data("synthetic", 0, 4, seed=0))
    with pytest.raises(ValueError, match="cannot switch its data at run time"):
        GuardedTask(Toy()).switch_data(load_node_data("synthetic", 0, 4, seed=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_after_a_drift_the_own_model_serves_the_new_data_at_the_next_look(seed: int) -> None:
    """The node judges whether to found by its own model. Right after its labels changed
    meaning, a model of the old data is confidently wrong (0.08-0.27 here after one more fit):
    the node would stay for many intervals in a group that no longer fits it, pulling that
    group's model its way. The learner catches up at its next fit after the switch (the switch
    itself trains nothing: the node looks for its new data's group first)."""
    from mycelium_p2p.node.flower_learning import FlowerLearning, FlowerSettings

    old = load_node_data("digits:label-shift:2", 1, 6, seed=0)  # concept 1
    learner = FlowerLearning(ModelTask(old), FlowerSettings(), lambda _r: None,
                             random.Random(seed), "node-1", lambda _n: None)  # fmt: skip
    try:
        for _ in range(20):
            before = learner.train_local()
        own = learner.local_parameters()
        learner.switch_data(load_node_data("digits:label-shift:2:0", 1, 6, seed=0))
        kept = zip(own, learner.local_parameters(), strict=True)
        assert all(np.array_equal(a, b) for a, b in kept)
        after = learner.train_local()
        print(f"own model on its validation split: {before:.2f} before, {after:.2f} after")
        assert before > 0.8 and after > 0.6
    finally:
        learner.close()


def test_after_a_drift_groups_are_scored_on_the_new_training_split_too() -> None:
    """With seed 2, concepts 0 and 3 of four give five of the ten labels the same meaning, and
    9 of node 11's 12 validation samples (of 24 nodes) carry those: a model of its old concept
    scores 0.75 there, but about half on the node's other new data. No group has trained on
    the new training split, so after the switch it scores groups as well, five times the
    samples; the own model, trained on it, is scored on the validation split alone."""
    from mycelium_p2p.learning import models
    from mycelium_p2p.node.flower_learning import FlowerLearning, FlowerSettings

    def concept_model(concept: int) -> bytes:  # trained on a third of the pool without node 11
        task = ModelTask(load_node_data(f"digits:label-shift:4:{concept}", 2, 3, seed=2))
        weights = task.initial_parameters()
        for i in range(8):
            weights = task.fit(weights, {"seed": i}).parameters
        return models.weights_to_bytes(weights)

    old, new = concept_model(3), concept_model(0)
    data = load_node_data("digits:label-shift:4:3", 11, 24, seed=2)
    learner = FlowerLearning(ModelTask(data), FlowerSettings(), lambda _r: None,
                             random.Random(0), "n11", lambda _n: None)  # fmt: skip
    try:
        assert learner.probe_size(with_train=True) == learner.val_size == 12
        assert learner.score(old, with_train=True) == learner.score(old)
        learner.switch_data(load_node_data("digits:label-shift:4:0", 11, 24, seed=2))
        assert learner.probe_size(with_train=True) == 60
        on_val = {name: learner.score(m) for name, m in (("old", old), ("new", new))}
        wide = {name: learner.score(m, with_train=True) for name, m in (("old", old), ("new", new))}
        print(f"old and new concept on 12 samples: {on_val}; on 60: {wide}")
        assert on_val["old"] == 0.75 and wide["old"] <= 0.6
        assert wide["new"] - wide["old"] >= 0.3
    finally:
        learner.close()
