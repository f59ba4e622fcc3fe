"""The built-in tasks: a PyTorch model (``mlp`` or ``cnn``) on a data spec (``--data``).

They are tasks like any other (``task.Task``) and keep the spec keys nodes always used
(``mlp:1x8x8:10``), so that networks and JSON written before tasks keep their meaning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mycelium_p2p.learning import models, train
from mycelium_p2p.learning.data import NodeData, Split, describe
from mycelium_p2p.learning.task import (
    TRAIN_PROBE_PER_VAL,
    Config,
    DataSizes,
    Fitted,
    Parameters,
    Scored,
    SplitName,
    TaskSpec,
)


class ModelTask:
    """A model family trained on one node's `NodeData` (the ``--model``/``--data`` task).

    Parameters
    ----------
    data : NodeData
        Fit on ``data.train``, evaluate on ``data.val`` or ``data.test`` (or on up to
        ``TRAIN_PROBE_PER_VAL`` training samples per validation sample, after a data switch).
    model : str
        ``mlp`` or ``cnn`` (``models.MODEL_NAMES``), or a whole spec such as ``mlp:1x8x8:10``
        (it must match the data's shape and classes).
    local_epochs, batch_size, lr : int, int, float
        Training per fit (defaults: 2, 32, 3e-3).
    seed : int
        Seed of the initial weights, and of a fit's shuffling when its config has no ``seed``
        (default: 0).
    """

    probe_samples: int | None = None

    def __init__(
        self,
        data: NodeData,
        model: str = "mlp",
        *,
        local_epochs: int = 2,
        batch_size: int = 32,
        lr: float = 3e-3,
        seed: int = 0,
    ) -> None:
        key = models.model_spec(model.split(":", 1)[0], data.input_shape, data.classes)
        if ":" in model and model != key:
            raise models.ModelSpecError(f"model spec {model!r} does not fit the data ({key})")
        self.data = data
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self._fits = 0
        self._model = models.build_model(key, seed=seed)
        initial = models.get_weights(self._model)
        self._initial = [w.copy() for w in initial]
        self._spec = TaskSpec(key, TaskSpec.of("builtin", initial).arrays)

    @property
    def spec(self) -> TaskSpec:
        return self._spec

    def initial_parameters(self) -> Parameters:
        return [w.copy() for w in self._initial]

    def fit(self, parameters: Parameters, config: Config) -> Fitted:
        self._fits += 1
        seed = config.get("seed", self.seed * 100_003 + self._fits)
        models.set_weights(self._model, parameters)
        loss = train.train(
            self._model,
            self.data.train,
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=int(seed),
            proximal_mu=float(config.get("proximal_mu", 0.0)),
        )
        return Fitted(models.get_weights(self._model), len(self.data.train), float(loss))

    def evaluate(self, parameters: Parameters, split: SplitName) -> Scored:
        models.set_weights(self._model, parameters)
        result = train.evaluate(self._model, self._split(split))
        loss = result.loss if np.isfinite(result.loss) else 0.0
        return Scored(float(result.accuracy), float(loss), result.examples)

    def _split(self, split: SplitName) -> Split:
        if split == "train":  # a bounded number: a probe stays cheap on large data
            most = TRAIN_PROBE_PER_VAL * len(self.data.val)
            train_ = self.data.train
            return Split(train_.x[:most], train_.y[:most])
        return self.data.test if split == "test" else self.data.val

    def sizes(self) -> DataSizes:
        return DataSizes(len(self.data.train), len(self.data.val), len(self.data.test))

    def switch_data(self, data: NodeData) -> None:
        """Fit and evaluate on ``data`` from the next call on (the node's world changed).

        Raises
        ------
        ValueError
            When ``data`` needs another model (other input shape or classes).
        """
        key = models.model_spec(self._spec.key.split(":", 1)[0], data.input_shape, data.classes)
        if key != self._spec.key:
            raise ValueError(f"new data needs model {key}, the task runs {self._spec.key}")
        self.data = data

    def describe(self) -> dict[str, Any]:
        """What the registry has always been told: description, sizes and concept."""
        full = describe(self.data)
        return {k: full[k] for k in ("description", "train", "val", "concept")}
