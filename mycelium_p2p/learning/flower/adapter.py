"""A stock Flower ``NumPyClient`` as a task, and a task as a plain ``NumPyClient``.

`ClientTask` takes the client exactly as its author wrote it for Flower: ``get_parameters``
gives the initial parameters (and, with the factory's name, the spec), ``fit`` trains, and
``evaluate`` scores a group's model on the node's data, which is what probing a group is. The
score is the ``accuracy`` metric of ``evaluate`` when there is one, else ``exp(-loss)``: it ranks
groups exactly as the negative loss does and stays in [0, 1] like an accuracy (the choice is
logged once). A client has one evaluation set: it serves as validation and test data. Its
sizes are learned from what ``fit`` and ``evaluate`` report.

`TaskClient` is the other way round, for plain Flower in ``mycelium bench rounds``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.common import Scalar
from flwr.compat.client.numpy_client import NumPyClient, has_evaluate, has_fit, has_get_parameters

from mycelium_p2p.learning.task import (
    Config,
    DataSizes,
    Fitted,
    GuardedTask,
    Parameters,
    Scored,
    SplitName,
    TaskError,
    TaskSpec,
)

log = logging.getLogger("mycelium_p2p.learning.task")


def numpy_client_of(obj: Any) -> NumPyClient | None:
    """``obj`` as a ``NumPyClient``: itself, or the one inside its ``to_client()`` (else None)."""
    if isinstance(obj, NumPyClient):
        return obj
    inner = getattr(obj, "numpy_client", None)
    return inner if isinstance(inner, NumPyClient) else None


class ClientTask:
    """A Flower ``NumPyClient`` as a task (see the module docstring).

    Parameters
    ----------
    client : NumPyClient
        The client, unchanged.
    name : str
        Its factory's name: the spec's name.
    """

    probe_samples: int | None = None

    def __init__(self, client: NumPyClient, name: str) -> None:
        for has, method in ((has_get_parameters, "get_parameters"), (has_fit, "fit")):
            if not has(client):
                raise TaskError(f"the NumPyClient has no {method} of its own")
        if not has_evaluate(client):
            raise TaskError("the NumPyClient has no evaluate of its own: probing needs it")
        self.client = client
        self.name = name
        try:
            initial = client.get_parameters(config={})
        except Exception as exc:
            raise TaskError(f"get_parameters raised {type(exc).__name__}: {exc}") from None
        if not isinstance(initial, list | tuple):
            raise TaskError(f"get_parameters returned a {type(initial).__name__}, not a list")
        self._initial = [_array(a, i, "get_parameters") for i, a in enumerate(initial)]
        self._spec = TaskSpec.of(name, self._initial)
        self._train = 0
        self._val = 0
        self._scored_by: str | None = None

    @property
    def spec(self) -> TaskSpec:
        return self._spec

    def initial_parameters(self) -> Parameters:
        return [a.copy() for a in self._initial]

    def fit(self, parameters: Parameters, config: Config) -> Fitted:
        answer = self.client.fit(parameters, dict(config))
        new, examples, metrics = _triple(answer, "fit")
        if not isinstance(new, list | tuple):
            raise TaskError(f"fit returned parameters as a {type(new).__name__}, not a list")
        arrays = [_array(a, i, "fit") for i, a in enumerate(new)]
        self._train = max(self._train, _examples(examples, "fit"))
        loss = next(
            (metrics[k] for k in ("loss", "train_loss") if _is_number(metrics.get(k))), None
        )
        return Fitted(arrays, examples, math.nan if loss is None else float(loss))

    def evaluate(self, parameters: Parameters, split: SplitName) -> Scored:
        loss, examples, metrics = _triple(self.client.evaluate(parameters, {}), "evaluate")
        if not _is_number(loss):
            raise TaskError(f"evaluate returned a loss of type {type(loss).__name__}")
        self._val = max(self._val, _examples(examples, "evaluate"))
        accuracy = metrics.get("accuracy")
        scored_by = "accuracy" if _is_number(accuracy) else "loss"
        if scored_by != self._scored_by:
            self._scored_by = scored_by
            log.info(
                "%s: groups are compared by %s",
                self.name,
                "the 'accuracy' metric of evaluate"
                if scored_by == "accuracy"
                else "the loss of evaluate (no 'accuracy' metric): score exp(-loss)",
            )
        if scored_by == "accuracy":
            score = float(accuracy)  # type: ignore[arg-type]
        else:  # a loss too large to be finite scores nothing
            score = math.exp(-float(loss)) if math.isfinite(loss) and loss >= 0 else 0.0
        return Scored(score, float(loss), examples)

    def sizes(self) -> DataSizes:
        return DataSizes(self._train, self._val, self._val)

    def describe(self) -> dict[str, Any]:
        return {"description": f"Flower NumPyClient {self.name}", "train": self._train,
                "val": self._val}  # fmt: skip


def _array(value: Any, index: int, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TaskError(f"{what} returned a {type(value).__name__} at index {index}, not a numpy "
                        "array")  # fmt: skip
    return value


def _triple(answer: Any, what: str) -> tuple[Any, int, Mapping[str, Scalar]]:
    if not (isinstance(answer, tuple | list) and len(answer) == 3):
        raise TaskError(f"{what} must return a tuple of 3 (as Flower's NumPyClient does)")
    first, examples, metrics = answer
    if not isinstance(metrics, Mapping):
        raise TaskError(f"{what} returned metrics as a {type(metrics).__name__}, not a dict")
    return first, examples, metrics


def _examples(value: Any, what: str) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TaskError(f"{what} returned num_examples={value!r}, not an integer >= 1")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


class TaskClient(NumPyClient):
    """A task as a plain Flower ``NumPyClient`` (plain Flower in the benchmark)."""

    def __init__(self, task: GuardedTask, seed: int = 0) -> None:
        self.task = task
        self.seed = seed

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        return self.task.initial_parameters()

    def fit(self, parameters: list[np.ndarray], config: dict[str, Scalar]) -> Any:
        fitted = self.task.fit(parameters, {**config, "seed": self.seed})
        return fitted.parameters, fitted.examples, {}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Scalar]) -> Any:
        scored = self.task.evaluate(parameters, "val")
        return scored.loss, scored.examples, {"accuracy": scored.accuracy}
