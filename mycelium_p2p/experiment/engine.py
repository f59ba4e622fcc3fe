"""Training many small models at once: the baselines' and the simulation's engine.

A baseline trains one copy of the model per node every round (FedAvg: every member from the
group's model; alone: every node from its own), each on its own shard, with the training the
real system uses (``learning.train.train``: Adam 3e-3, a fresh optimiser per round, mini-batches
of 32 in a new random order every epoch, 2 local epochs). Done one model after another this
costs more than the run it is compared with (hundreds of rounds times nodes times baselines).
Here all the copies of a round train together: their weights are stacked along a first axis,
and one vectorised step (``torch.func.vmap`` of the gradient of one model's loss) updates every
copy on its own mini-batch. Shards of different sizes are padded; a copy whose shard has no
batch left at a step does not move (its Adam state neither), so each copy follows exactly the
schedule it would follow alone.

Weights are tuples of tensors stacked on axis 0 (``Stack``), in the order of the model's
``state_dict``, so that ``models.get_weights`` and ``stack[i]`` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from mycelium_p2p.learning.data import NodeData
from mycelium_p2p.learning.models import build_model

Stack = tuple[torch.Tensor, ...]
SplitName = Literal["train", "val", "test"]

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as local training uses
ADAM_EPS = 1e-8
EVAL_CHUNK = 64  # models scored at once (bounds memory when scoring many on many)


class _Padded:
    """One split of every node, padded to the longest: inputs, labels and lengths."""

    def __init__(self, datas: Sequence[NodeData], split: SplitName) -> None:
        parts = [getattr(d, split) for d in datas]
        self.lengths = torch.tensor([len(p) for p in parts], dtype=torch.long)
        longest = max(1, int(self.lengths.max()))
        shape = datas[0].input_shape
        self.x = torch.zeros((len(parts), longest, *shape), dtype=torch.float32)
        self.y = torch.zeros((len(parts), longest), dtype=torch.long)
        for i, p in enumerate(parts):
            if len(p):
                self.x[i, : len(p)] = torch.from_numpy(np.asarray(p.x, dtype=np.float32))
                self.y[i, : len(p)] = torch.from_numpy(np.asarray(p.y, dtype=np.int64))
        positions = torch.arange(longest)
        self.valid = positions[None, :] < self.lengths[:, None]


class BatchEngine:
    """Trains and scores stacks of models on the nodes' splits (see the module docstring).

    Parameters
    ----------
    spec
        Model spec of every node.
    datas
        The nodes' data (node ``i`` is ``datas[i]``); replace one with :meth:`set_data`.
    epochs
        Local epochs per round (default: 2).
    batch_size
        Mini-batch size (default: 32).
    lr
        Adam step (default: 3e-3).
    seed
        Seed of initial weights and of every shuffle (default: 0).
    """

    def __init__(
        self,
        spec: str,
        datas: Sequence[NodeData],
        epochs: int = 2,
        batch_size: int = 32,
        lr: float = 3e-3,
        seed: int = 0,
    ) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
        if not datas:
            raise ValueError("the engine needs at least one node")
        torch.set_num_threads(1)  # tiny models: threads only add contention on 2 shared cores
        self.spec = spec
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self._gen = torch.Generator().manual_seed(int(seed))
        self._seed = int(seed)
        self._model = build_model(spec)
        self._names = list(self._model.state_dict())
        self._datas = list(datas)
        self._splits: dict[SplitName, _Padded] = {}
        self._logits = vmap(self._forward, in_dims=(0, None))
        self._logits_each = vmap(self._forward)

    # -- data ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._datas)

    def set_data(self, node: int, data: NodeData) -> None:
        """Give node ``node`` new data (a drift); its splits are padded again when next used."""
        self._datas[node] = data
        self._splits.clear()

    def _split(self, split: SplitName) -> _Padded:
        if split not in self._splits:
            self._splits[split] = _Padded(self._datas, split)
        return self._splits[split]

    # -- models ----------------------------------------------------------------------------------

    def init(self, count: int, salt: int = 0) -> Stack:
        """``count`` freshly initialised models, seeded by the engine's seed and ``salt`` (the
        same arguments give the same models, whatever was drawn before)."""
        seeds = np.random.default_rng([self._seed, 0x1A17, salt]).integers(2**31, size=count)
        models = [build_model(self.spec, seed=int(s)) for s in seeds]
        return tuple(
            torch.stack([m.state_dict()[name].detach().clone() for m in models])
            for name in self._names
        )

    @staticmethod
    def take(stack: Stack, index: Sequence[int] | torch.Tensor) -> Stack:
        """The models at ``index`` (repeats allowed), as a new stack."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return tuple(t[idx] for t in stack)

    @staticmethod
    def average(stack: Stack, groups: Sequence[Sequence[int]], weights: Sequence[float]) -> Stack:
        """One model per group: the mean of its rows of ``stack`` weighted by ``weights``.

        A group without weight (no examples) is averaged evenly (FedAvg's convention).
        """
        rows = len(stack[0])
        coef = torch.zeros((len(groups), rows), dtype=torch.float32)
        for g, members in enumerate(groups):
            if not members:
                raise ValueError(f"group {g} has no members to average")
            w = torch.tensor([float(weights[i]) for i in members], dtype=torch.float32)
            w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(members))
            coef[g, torch.as_tensor(list(members), dtype=torch.long)] = w
        return tuple(torch.einsum("gm,m...->g...", coef, t) for t in stack)

    @staticmethod
    def to_numpy(stack: Stack, index: int) -> list[np.ndarray]:
        """Model ``index`` of ``stack`` as the arrays ``models.get_weights`` would return."""
        return [t[index].detach().numpy().copy() for t in stack]

    @staticmethod
    def from_numpy(weights: Sequence[Sequence[np.ndarray]]) -> Stack:
        """A stack of models given as lists of arrays."""
        return tuple(
            torch.stack([torch.as_tensor(np.asarray(w[k])) for w in weights])
            for k in range(len(weights[0]))
        )

    # -- training --------------------------------------------------------------------------------

    def _forward(self, params: Stack, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._model, dict(zip(self._names, params, strict=True)), (x,))

    def train(self, start: Stack, nodes: Sequence[int]) -> Stack:
        """Train copy ``j`` of ``start`` on node ``nodes[j]``'s train split; return the copies.

        Every copy runs ``epochs`` epochs of mini-batch Adam with a fresh optimiser, as
        ``learning.train.train`` does for one model.
        """
        if len(start[0]) != len(nodes):
            raise ValueError(f"{len(start[0])} models for {len(nodes)} nodes")
        split = self._split("train")
        idx = torch.as_tensor(list(nodes), dtype=torch.long)
        x_all, y_all = split.x[idx], split.y[idx]
        lengths, valid = split.lengths[idx], split.valid[idx]
        count, longest = len(idx), x_all.shape[1]
        shapes = [t.shape[1:] for t in start]
        sizes = [int(np.prod(s)) for s in shapes]
        # One flat row of parameters per copy: Adam is then a handful of operations in all.
        flat = torch.cat([t.detach().reshape(count, -1) for t in start], dim=1)
        m = torch.zeros_like(flat)
        v = torch.zeros_like(flat)
        steps = torch.zeros((count, 1))
        rows = torch.arange(count)[:, None]
        b = self.batch_size
        for _ in range(self.epochs):
            keys = torch.rand((count, longest), generator=self._gen).masked_fill(~valid, 2.0)
            order = keys.argsort(dim=1)  # each node's valid positions first, shuffled
            for first in range(0, int(lengths.max()), b):
                cols = order[:, first : first + b]
                w = (torch.arange(first, first + cols.shape[1])[None, :] < lengths[:, None]).float()
                active = (w.sum(dim=1, keepdim=True) > 0).float()
                leaf = flat.requires_grad_()
                params = tuple(
                    part.reshape(count, *shape)
                    for part, shape in zip(leaf.split(sizes, dim=1), shapes, strict=True)
                )
                logits = self._logits_each(params, x_all[rows, cols])
                ce = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    y_all[rows, cols].reshape(-1),
                    reduction="none",
                ).reshape(w.shape)
                loss = ((ce * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)).sum()
                (g,) = torch.autograd.grad(loss, leaf)
                flat = flat.detach()
                with torch.no_grad():  # Adam, in place; a copy without a batch stays put
                    steps += active
                    m.lerp_(g, (1 - BETAS[0]) * active)
                    v.lerp_(g.square_(), (1 - BETAS[1]) * active)
                    t = steps.clamp(min=1.0)
                    denom = (v / (1 - BETAS[1] ** t)).sqrt_().add_(ADAM_EPS)
                    flat.sub_(m.div(denom).mul_(self.lr * active / (1 - BETAS[0] ** t)))
        return tuple(
            part.reshape(count, *shape).contiguous()
            for part, shape in zip(flat.split(sizes, dim=1), shapes, strict=True)
        )

    # -- scoring ---------------------------------------------------------------------------------

    def accuracy(
        self, models: Stack, nodes: Sequence[int], split: SplitName = "test"
    ) -> np.ndarray:
        """Accuracy of model ``j`` on node ``nodes[j]``'s ``split`` (0 for an empty split)."""
        correct, _, lengths = self._score_each(models, nodes, split)
        return correct / np.maximum(lengths, 1)

    def loss(self, models: Stack, nodes: Sequence[int], split: SplitName = "train") -> np.ndarray:
        """Mean cross-entropy of model ``j`` on node ``nodes[j]``'s ``split``."""
        _, total, lengths = self._score_each(models, nodes, split)
        return total / np.maximum(lengths, 1)

    def _score_each(
        self, models: Stack, nodes: Sequence[int], split: SplitName
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = self._split(split)
        idx = torch.as_tensor(list(nodes), dtype=torch.long)
        correct = np.zeros(len(idx))
        total = np.zeros(len(idx))
        with torch.no_grad():
            for lo in range(0, len(idx), EVAL_CHUNK):
                part = idx[lo : lo + EVAL_CHUNK]
                sub = tuple(t[lo : lo + EVAL_CHUNK] for t in models)
                logits = self._logits_each(sub, data.x[part])  # (models, longest, classes)
                c, s = _tally(logits, data.y[part], data.valid[part])
                correct[lo : lo + len(part)] = c
                total[lo : lo + len(part)] = s
        return correct, total, data.lengths[idx].numpy()

    def matrix(
        self, models: Stack, nodes: Sequence[int], split: SplitName = "val"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy and mean loss of every model on every listed node, as (nodes, models) arrays."""
        data = self._split(split)
        idx = torch.as_tensor(list(nodes), dtype=torch.long)
        x = data.x[idx].reshape(-1, *data.x.shape[2:])  # every node's samples, one after another
        y = data.y[idx]
        valid = data.valid[idx]
        lengths = data.lengths[idx].numpy()
        count = len(models[0])
        acc = np.zeros((len(idx), count))
        loss = np.zeros((len(idx), count))
        with torch.no_grad():
            for lo in range(0, count, EVAL_CHUNK):
                sub = tuple(t[lo : lo + EVAL_CHUNK] for t in models)
                logits = self._logits(sub, x)  # (models, nodes * longest, classes)
                logits = logits.reshape(len(sub[0]), len(idx), -1, logits.shape[-1])
                for j in range(len(sub[0])):
                    c, s = _tally(logits[j], y, valid)
                    acc[:, lo + j] = c / np.maximum(lengths, 1)
                    loss[:, lo + j] = s / np.maximum(lengths, 1)
        return acc, loss


def _tally(
    logits: torch.Tensor, y: torch.Tensor, valid: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Correct answers and summed cross-entropy per row of (rows, samples, classes) logits."""
    hits = ((logits.argmax(dim=-1) == y) & valid).sum(dim=1)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    ce = (ce.reshape(y.shape) * valid).sum(dim=1)
    return hits.numpy().astype(float), ce.numpy().astype(float)
