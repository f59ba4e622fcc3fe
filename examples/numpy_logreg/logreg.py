"""A Mycelium task in plain numpy: multinomial logistic regression, no deep-learning framework.

It is written against the task interface (``mycelium_p2p.learning.task``): a spec, initial
parameters, ``fit``, ``evaluate`` on the validation or test data, and the data sizes. It also
declares ``probe_samples``: a probe of a group's model scores at most that many validation
samples, so that probing stays cheap however much data the node holds.

    mycelium join --bootstrap URL \\
        --task examples/numpy_logreg/logreg.py:task --task-option data=my_data.npz
"""

from __future__ import annotations

import numpy as np

from mycelium_p2p.learning.task import Config, DataSizes, Fitted, Scored, SplitName, TaskSpec


class LogisticRegression:
    """Softmax regression over the flattened inputs of one .npz file (``x``, ``y``).

    The file is shuffled and split 60/20/20 into train, validation and test data. A fit runs
    ``epochs`` of mini-batch gradient descent with step ``lr``.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes: int,
        *,
        epochs: int = 5,
        lr: float = 0.5,
        probe_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        y = np.asarray(y, dtype=np.int64)
        order = np.random.default_rng(seed).permutation(len(y))
        a, b = round(0.6 * len(y)), round(0.8 * len(y))
        self.splits = {
            "train": (x[order[:a]], y[order[:a]]),
            "val": (x[order[a:b]], y[order[a:b]]),
            "test": (x[order[b:]], y[order[b:]]),
        }
        self.features, self.classes = x.shape[1], classes
        self.epochs, self.lr = epochs, lr
        self.probe_samples = probe_samples
        self.spec = TaskSpec.of("logreg", self.initial_parameters())

    def initial_parameters(self) -> list[np.ndarray]:
        return [
            np.zeros((self.features, self.classes), np.float32),
            np.zeros(self.classes, np.float32),
        ]

    def fit(self, parameters: list[np.ndarray], config: Config) -> Fitted:
        w, b = (p.copy() for p in parameters)
        x, y = self.splits["train"]
        rng = np.random.default_rng(int(config.get("seed", 0)))
        losses = []
        for _ in range(self.epochs):
            for batch in np.array_split(rng.permutation(len(y)), max(1, len(y) // 32)):
                p = _softmax(x[batch] @ w + b)
                losses.append(-np.log(p[np.arange(len(batch)), y[batch]] + 1e-12).mean())
                p[np.arange(len(batch)), y[batch]] -= 1.0  # gradient of the cross-entropy
                w -= (self.lr / len(batch)) * (x[batch].T @ p).astype(np.float32)
                b -= (self.lr / len(batch)) * p.sum(axis=0).astype(np.float32)
        return Fitted([w, b], len(y), float(np.mean(losses)))

    def evaluate(self, parameters: list[np.ndarray], split: SplitName) -> Scored:
        x, y = self.splits[split]
        if split == "val" and self.probe_samples is not None:
            x, y = x[: self.probe_samples], y[: self.probe_samples]
        p = _softmax(x @ parameters[0] + parameters[1])
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
        return Scored(float((p.argmax(axis=1) == y).mean()), loss, len(y))

    def sizes(self) -> DataSizes:
        return DataSizes(*(len(self.splits[s][1]) for s in ("train", "val", "test")))

    def describe(self) -> dict[str, str]:
        return {"description": f"numpy logistic regression, {self.features} features"}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def task(
    data: str, epochs: str = "5", lr: str = "0.5", probe_samples: str = "", seed: str = "0"
) -> LogisticRegression:
    """The task of the arrays in the .npz file ``data`` (options arrive as strings)."""
    with np.load(data, allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"]
        classes = int(archive["classes"]) if "classes" in archive.files else int(y.max()) + 1
    return LogisticRegression(
        x,
        y,
        classes,
        epochs=int(epochs),
        lr=float(lr),
        probe_samples=int(probe_samples) if probe_samples else None,
        seed=int(seed),
    )
