"""Local training and evaluation of a model on one split (no global RNG, no I/O)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .data import Split

EVAL_BATCH = 512


class Evaluation(NamedTuple):
    """Mean cross-entropy ``loss``, ``accuracy`` in [0, 1], and number of ``examples``."""

    loss: float
    accuracy: float
    examples: int


def limit_threads(n: int = 1) -> None:
    """Restrict torch to ``n`` intra-op threads; called by the daemon, never at import."""
    torch.set_num_threads(max(1, int(n)))


def _tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.asarray(split.x, dtype=np.float32)), torch.from_numpy(
        np.asarray(split.y, dtype=np.int64)
    )


def train(
    model: nn.Module,
    split: Split,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    proximal_mu: float = 0.0,
) -> float:
    """Train ``model`` in place with Adam and cross-entropy; return the mean training loss.

    Parameters
    ----------
    epochs, batch_size, lr : int, int, float
        Local epochs (default: 2), mini-batch size (default: 32), Adam step (default: 3e-3).
    seed : int
        Seed of the shuffling, through a private ``torch.Generator`` (default: 0).
    proximal_mu : float
        FedProx proximal term weight around the starting weights (default: 0, plain training).
    """
    if len(split) == 0 or epochs <= 0:
        return float("nan")
    x, y = _tensors(split)
    gen = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if anchor:
                prox = sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                loss = loss + 0.5 * proximal_mu * prox
            loss.backward()
            optimizer.step()
    return total / max(count, 1)


def evaluate(model: nn.Module, split: Split) -> Evaluation:
    """Evaluate ``model`` on ``split``: mean loss, accuracy and example count."""
    n = len(split)
    if n == 0:
        return Evaluation(float("nan"), 0.0, 0)
    x, y = _tensors(split)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            target = y[start : start + EVAL_BATCH]
            loss += float(loss_fn(logits, target))
            correct += int((logits.argmax(dim=1) == target).sum())
    return Evaluation(loss / n, correct / n, n)
