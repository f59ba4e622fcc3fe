"""A learner whose accuracy depends only on which concepts a model was trained on (in memory).

The in-memory network needs thousands of learning nodes on one fake clock, so training is
replaced by bookkeeping that keeps what group choice depends on:

- a model is a *mix*: the share of each concept in the data it was trained on, and a *quality*
  that grows with training (local epochs, group rounds);
- its accuracy on a node of concept ``c`` is ``chance + (peak - chance) * mix[c] * quality``,
  observed on the node's ``val_size`` validation samples (a binomial draw, so probes are as
  noisy as on real data of that size);
- a group's round averages its members' models weighted by their training examples, and a group
  model's peak grows with the data behind it (more members of one concept beat one alone).

Measured on real data (scikit-learn digits, label shift with 4 concepts; see the docs): one
FedAvg model over all concepts scored about 0.31-0.41, each node alone about 0.86-0.90, FedAvg
within the true concept groups 0.93-0.95. The defaults reproduce those levels.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from mycelium_p2p.learning.task import wide_probe_samples
from mycelium_p2p.node.ports import RoundSummary

CHANCE = 0.1
PEAK_ALONE = 0.88
PEAK_GROUP = 0.95
TRAINING_STEP = 0.2  # quality one round (or one local training of the policy) adds
SPEC = "fake:concepts:10"


@dataclass
class Model:
    """What a fake model knows: concept shares, quality in [0, 1], and the data behind it."""

    mix: list[float]
    quality: float
    examples: int

    def to_bytes(self) -> bytes:
        return msgpack.packb([self.mix, self.quality, self.examples])

    @classmethod
    def from_bytes(cls, payload: bytes, concepts: int) -> Model:
        try:
            mix, quality, examples = msgpack.unpackb(payload)
        except Exception as exc:  # any garbage: refuse it as a real learner would
            raise ValueError(f"not a fake model: {exc}") from exc
        if len(mix) != concepts or not 0.0 <= quality <= 1.0:
            raise ValueError("fake model of another shape")
        return cls([float(x) for x in mix], float(quality), int(examples))


class FakeWorld:
    """What the fake learners of one network share: the servers by address, and the clock.

    Parameters
    ----------
    concepts : int
        Number of concepts K.
    call_at : callable
        Schedules ``fn`` at a simulated time (the network's event loop).
    clock : callable
        The simulated time.
    round_seconds : float
        Simulated seconds per group round (default: 1.5: training plus the leader's pause).
    """

    def __init__(
        self,
        concepts: int,
        call_at: Callable[[float, Callable[[], None]], None],
        clock: Callable[[], float],
        round_seconds: float = 1.5,
    ) -> None:
        self.concepts = concepts
        self.call_at = call_at
        self.clock = clock
        self.round_seconds = round_seconds
        self.servers: dict[str, FakeServer] = {}
        self._ports = itertools.count(1)

    def address(self) -> str:
        return f"fake-flower:{next(self._ports)}"

    def peak(self, examples: int, own_examples: int) -> float:
        """A model's best accuracy given the examples behind it (more data, better model)."""
        share = own_examples / max(examples, own_examples, 1)
        return PEAK_GROUP - (PEAK_GROUP - PEAK_ALONE) * share


class FakeServer:
    """A group's server: a round every ``round_seconds`` over the clients following it."""

    def __init__(
        self,
        world: FakeWorld,
        model: Model,
        start_round: int,
        on_round: Callable[[RoundSummary], None],
    ) -> None:
        self.world = world
        self.address = world.address()
        self.model = model
        self.round = start_round
        self.clients: list[FakeLearner] = []
        self.blends: list[list[tuple[Model, float]]] = []  # folded into the next round
        self._on_round = on_round
        self._stopped = False
        world.servers[self.address] = self
        world.call_at(world.clock() + world.round_seconds, self._run_round)

    def _run_round(self) -> None:
        if self._stopped:
            return
        clients = [c for c in self.clients if not c.closed]
        if clients:
            total = sum(c.train_examples for c in clients)
            mix = [0.0] * self.world.concepts
            for c in clients:
                if c.holding:
                    mix = [
                        x + c.train_examples / total * y
                        for x, y in zip(mix, self.model.mix, strict=True)
                    ]
                else:
                    mix[c.concept] += c.train_examples / total
            quality = self.model.quality
            for shared in self.blends:  # other groups' models at their weights, the rest ours
                own = max(0.0, 1.0 - sum(weight for _, weight in shared))
                mix = [own * x for x in mix]
                quality *= own
                for model, weight in shared:
                    mix = [x + weight * y for x, y in zip(mix, model.mix, strict=True)]
                    quality += weight * model.quality
                    total += model.examples
            self.blends = []
            self.model = Model(mix, min(1.0, quality + TRAINING_STEP), total)
            self.round += 1
            scores = [(c.observe(self.model), c.val_size) for c in clients]
            examples = sum(n for _, n in scores)
            accuracy = sum(a * n for a, n in scores) / examples if examples else 0.0
            for c in clients:
                c.received(self.model, self.round, self.address)
            self._on_round(
                RoundSummary(self.round, accuracy, 1.0 - accuracy, examples, len(clients))
            )
        self.world.call_at(self.world.clock() + self.world.round_seconds, self._run_round)

    def payload(self) -> tuple[int, bytes]:
        return self.round, self.model.to_bytes()

    def running(self) -> bool:
        return not self._stopped

    def num_clients(self) -> int:
        return len(self.clients)

    def stop(self) -> None:
        self._stopped = True
        self.world.servers.pop(self.address, None)
        for c in list(self.clients):
            c.unfollow()


@dataclass
class FakeLearner:
    """The learning port of one in-memory node (see ``node.ports.LearningPort``)."""

    world: FakeWorld
    concept: int
    rng: random.Random
    on_round: Callable[[RoundSummary], None] = lambda _r: None
    val_size: int = 20
    train_examples: int = 80
    closed: bool = False
    holding: bool = False  # its rounds' share votes for the group's model as it is
    switched: bool = field(default=False, init=False)  # the training split scores groups too
    local: Model = field(init=False)
    last_global: Model | None = field(default=None, init=False)
    last_global_round: int = field(default=0, init=False)
    last_global_from: str | None = field(default=None, init=False)
    following: FakeServer | None = field(default=None, init=False)
    serving: FakeServer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        mix = [0.0] * self.world.concepts
        mix[self.concept] = 1.0
        self.local = Model(mix, 0.0, self.train_examples)

    # -- the port -----------------------------------------------------------------------------

    @property
    def spec(self) -> str:
        return SPEC

    def summary(self) -> dict[str, Any]:
        return {
            "description": f"fake concept {self.concept}",
            "train": self.train_examples,
            "val": self.val_size,
            "concept": self.concept,
        }

    def sizes(self) -> dict[str, int]:
        return {"train": self.train_examples, "val": self.val_size}

    def switch_data(self, data: Any) -> None:
        """``data`` is the node's new concept; the local model trains on it from now on (as
        new: what it learnt of the old concept is of no use)."""
        self.concept = int(data)
        self.switched = True
        mix = [0.0] * self.world.concepts
        mix[self.concept] = 1.0
        self.local = Model(mix, 0.0, self.train_examples)

    def train_local(self) -> float:
        self.local.quality = min(1.0, self.local.quality + TRAINING_STEP)
        return self.observe(self.local)

    def probe_size(self, *, with_train: bool = False) -> int:
        if not (with_train and self.switched):
            return self.val_size
        return wide_probe_samples(self.val_size, self.train_examples)

    def score(self, payload: bytes, *, with_train: bool = False) -> float:
        model = Model.from_bytes(payload, self.world.concepts)
        return self.observe(model, self.probe_size(with_train=with_train))

    def adopt(self, payload: bytes, source: str, server_round: int) -> None:
        if self.last_global_from == source and self.last_global_round >= server_round:
            return
        self.last_global = Model.from_bytes(payload, self.world.concepts)
        self.last_global_round = server_round
        self.last_global_from = source

    def blend(self, shared: list[tuple[bytes, float]]) -> None:
        server = self.serving
        if server is None or not server.running():
            raise ValueError("this node leads no group: nothing to blend into")
        server.blends.append([(Model.from_bytes(p, self.world.concepts), w) for p, w in shared])

    def group_accuracy(self, *, with_train: bool = False) -> float | None:
        model = self.group_model()
        return (
            None if model is None else self.observe(model, self.probe_size(with_train=with_train))
        )

    def group_model(self) -> Model | None:
        if self.following is not None and self.following.running():
            return self.following.model
        return self.last_global

    def start_server(self, start_round: int, *, from_group: bool) -> FakeServer:
        model = self.last_global if from_group and self.last_global is not None else self.local
        self.serving = FakeServer(self.world, model, start_round, self.on_round)
        return self.serving

    def follow(self, address: str) -> None:
        self.unfollow()
        server = self.world.servers.get(address)
        if server is not None:  # a server that is gone: like a failed connection, train nowhere
            server.clients.append(self)
            self.following = server

    def hold_group_training(self, hold: bool) -> None:
        self.holding = hold

    def unfollow(self) -> None:
        if self.following is not None and self in self.following.clients:
            self.following.clients.remove(self)
        self.following = None

    def last_round(self) -> int:
        return self.last_global_round

    def model_source(self) -> str | None:
        return self.last_global_from if self.last_global is not None else None

    def dead_threads(self) -> list[str]:
        return []

    def close(self) -> None:
        self.unfollow()
        self.closed = True

    # -- the model's accuracy -----------------------------------------------------------------

    def observe(self, model: Model, samples: int | None = None) -> float:
        """The model's accuracy on ``samples`` of this node's data (default: its validation
        samples), a noisy observation."""
        n = samples or self.val_size
        p = self.true_accuracy(model)
        return sum(self.rng.random() < p for _ in range(n)) / n

    def true_accuracy(self, model: Model) -> float:
        """What the model would score on unlimited data of this node's concept."""
        peak = self.world.peak(model.examples, self.train_examples)
        return CHANCE + (peak - CHANCE) * model.mix[self.concept] * model.quality

    def received(self, model: Model, round_: int, address: str) -> None:
        self.last_global = model
        self.last_global_round = round_
        self.last_global_from = address
