"""What a node learns: the task interface, its spec, and the checks around every call.

A task is a model plus the node's data: its spec (a name plus the shapes and dtypes of its
parameters; two nodes share a group only when their spec keys are equal), initial parameters,
local training (``fit``), scoring on the node's validation or test data (``evaluate``) and the
sizes of that data. The built-in models and data (``builtin.py``), a stock Flower
``NumPyClient`` (``flower/adapter.py``) and any object written against `Task` all go through it:
the node knows no other way to learn. Nothing here imports a learning framework.

`GuardedTask` wraps a task for the node: one call at a time (a task keeps one model), every
exception of the task's code turned into a `TaskError`, and every answer checked (types, shapes
and dtypes against the spec, finite numbers, counts), so that a broken task is one line naming
what is wrong and never a group's problem. `check_task` runs one fit and one evaluate and times
them (``mycelium task check`` and ``mycelium join --task`` before joining anything).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol, TypeVar

import numpy as np

from mycelium_p2p.limits import MAX_LOSS

Parameters = list[np.ndarray]
#: What a fit is told: Flower's config of the round (``server_round``, a strategy's keys such as
#: ``proximal_mu``) plus ``seed``, a seed for this call's randomness.
Config = Mapping[str, bool | bytes | float | int | str]
#: ``"train"`` is asked only of a task that switches its data (``switch_data``), after a switch:
#: no group has trained on the new training data yet, so it can score groups too; at most
#: ``TRAIN_PROBE_PER_VAL`` training samples per validation sample (a probe stays cheap).
SplitName = Literal["val", "test", "train"]
TRAIN_PROBE_PER_VAL = 4


def wide_probe_samples(val: int, train: int) -> int:
    """Samples behind a score on the validation split and the training samples it adds."""
    return val + min(train, TRAIN_PROBE_PER_VAL * val)


#: Longest spec key: the registry's bound on a model spec (``registry_api.ModelSpec``).
MAX_SPEC = 128
#: Longest name in a spec key made by `TaskSpec.of`.
MAX_NAME = 48
#: Most arrays a task may have (the weights payload's own bound, ``models.MAX_ARRAYS``).
MAX_ARRAYS = 1024
#: Most entries, and longest text, of a task's ``describe()`` kept for the registry.
MAX_DESCRIBE_KEYS = 8
MAX_DESCRIBE_TEXT = 200
#: Largest ``describe()`` as JSON, in bytes: half the registry's bound on a node's ``data`` map
#: (``registry_api.MAP_MAX_BYTES``), the rest is the node's own keys. Characters count here, and
#: one character can take up to 12 bytes once escaped.
MAX_DESCRIBE_BYTES = 2048

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class TaskError(ValueError):
    """A task that cannot be used; the message is one line naming what is wrong."""


@dataclass(frozen=True)
class ArraySpec:
    """One parameter array: its ``shape`` and numpy ``dtype`` string (e.g. ``"<f4"``)."""

    shape: tuple[int, ...]
    dtype: str

    def text(self) -> str:
        """Short form, e.g. ``f4[16x1x3x3]`` (the byte order is left out)."""
        return f"{self.dtype.lstrip('<>|=')}[{'x'.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class TaskSpec:
    """What two nodes must agree on to share a group.

    Parameters
    ----------
    key : str
        The string nodes compare (gossiped, sent to the registry; at most `MAX_SPEC` characters).
        The built-in tasks keep their historic keys, e.g. ``mlp:1x8x8:10``.
    arrays : tuple of ArraySpec
        The shape and dtype of every parameter array, in order.
    """

    key: str
    arrays: tuple[ArraySpec, ...]

    @classmethod
    def of(cls, name: str, parameters: Sequence[np.ndarray]) -> TaskSpec:
        """The spec of a task called ``name`` with these initial parameters.

        The key is ``NAME:f4[64x10],f4[10]`` (every array's dtype and shape) when that fits in
        `MAX_SPEC` characters, else ``NAME:<arrays>a<parameters>p:<digest>`` with a SHA-256 of the
        same list: equal keys still mean equal shapes and dtypes. Characters of ``name`` other
        than letters, digits, ``.``, ``_`` and ``-`` become ``_``; it is cut to `MAX_NAME`.
        """
        clean = "".join(c if c in _NAME_CHARS else "_" for c in str(name))[:MAX_NAME] or "task"
        arrays = tuple(_array_spec(p, i, "parameters") for i, p in enumerate(parameters))
        if not arrays:
            raise TaskError("the task has no parameters")
        if len(arrays) > MAX_ARRAYS:
            raise TaskError(f"the task has {len(arrays)} arrays; at most {MAX_ARRAYS} travel")
        listing = ",".join(a.text() for a in arrays)
        key = f"{clean}:{listing}"
        if len(key) > MAX_SPEC:
            digest = hashlib.sha256(listing.encode()).hexdigest()[:16]
            count = sum(math.prod(a.shape) for a in arrays)
            key = f"{clean}:{len(arrays)}a{count}p:{digest}"
        return cls(key, arrays)

    @property
    def parameter_count(self) -> int:
        """Numbers in all arrays together."""
        return sum(math.prod(a.shape) for a in self.arrays)

    @property
    def nbytes(self) -> int:
        """Bytes of one copy of the parameters."""
        return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in self.arrays)

    def listing(self) -> str:
        """Every array's dtype and shape, e.g. ``f4[64x10], f4[10]``."""
        return ", ".join(a.text() for a in self.arrays)

    def mismatch(self, parameters: Any, *, dtypes: bool = True) -> str | None:
        """Why ``parameters`` do not fit this spec (count, type, shape, dtype), or None."""
        if not isinstance(parameters, list | tuple):
            return f"a {type(parameters).__name__} instead of a list of numpy arrays"
        if len(parameters) != len(self.arrays):
            return f"{len(parameters)} arrays; the spec has {len(self.arrays)}"
        for i, (array, want) in enumerate(zip(parameters, self.arrays, strict=True)):
            if not isinstance(array, np.ndarray):
                return f"a {type(array).__name__} at index {i} instead of a numpy array"
            if tuple(array.shape) != want.shape:
                return f"shape {tuple(array.shape)} for array {i}; the spec says {want.shape}"
            if dtypes and array.dtype.str != want.dtype:
                return f"dtype {array.dtype} for array {i}; the spec says {np.dtype(want.dtype)}"
        return None


def _array_spec(array: Any, index: int, what: str) -> ArraySpec:
    if not isinstance(array, np.ndarray):
        raise TaskError(f"{what}: a {type(array).__name__} at index {index}, not a numpy array")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TaskError(f"{what}: array {index} has non-numeric dtype {array.dtype}")
    return ArraySpec(tuple(int(d) for d in array.shape), array.dtype.str)


@dataclass(frozen=True)
class Fitted:
    """What one fit gives back: new ``parameters``, the ``examples`` it trained on, and its mean
    training ``loss`` (NaN when the task does not say)."""

    parameters: Parameters
    examples: int
    loss: float = math.nan


@dataclass(frozen=True)
class Scored:
    """One evaluation: ``accuracy`` (any score in [0, 1], higher is better: groups are compared by
    it), ``loss`` (finite, >= 0) and the ``examples`` it was measured on."""

    accuracy: float
    loss: float
    examples: int


@dataclass(frozen=True)
class DataSizes:
    """How many ``train``, ``val`` and ``test`` examples the node holds (a leader bounds what a
    member claims in a round by the announced ``train`` and ``val``)."""

    train: int
    val: int
    test: int


class Task(Protocol):
    """What a node learns (see the module docstring and ``docs/tasks.md``).

    Two optional members: ``probe_samples`` (int or None: how many validation samples one
    evaluation uses, so that probing stays cheap; default: all) and ``describe()`` (a flat
    dict of short strings and numbers for the registry; default: the spec key).
    """

    @property
    def spec(self) -> TaskSpec:
        """The task's spec (`TaskSpec.of` makes one from a name and the initial parameters)."""
        ...

    def initial_parameters(self) -> Parameters:
        """The parameters a group founded by this node starts from."""
        ...

    def fit(self, parameters: Parameters, config: Config) -> Fitted:
        """Train from ``parameters`` on the node's training data; the new parameters."""
        ...

    def evaluate(self, parameters: Parameters, split: SplitName) -> Scored:
        """Score ``parameters`` on the node's validation (``"val"``) or test data."""
        ...

    def sizes(self) -> DataSizes:
        """The sizes of the node's data."""
        ...


def is_task(obj: Any) -> bool:
    """Whether ``obj`` has the members of `Task`."""
    members = ("initial_parameters", "fit", "evaluate", "sizes")
    return hasattr(obj, "spec") and all(callable(getattr(obj, m, None)) for m in members)


T = TypeVar("T")


class GuardedTask:
    """A task as the node uses it: serialised, its failures named, its answers checked.

    Parameters
    ----------
    task : Task
        The task.
    on_error : callable or None
        Called with the message of every `TaskError` the task causes (default: None).

    Raises
    ------
    TaskError
        When the task's spec, initial parameters, sizes or ``probe_samples`` are unusable.
    """

    def __init__(self, task: Any, on_error: Callable[[str], None] | None = None) -> None:
        if isinstance(task, GuardedTask):
            task = task.task
        if not is_task(task):
            raise TaskError(
                f"a {type(task).__name__} is not a task: it needs spec, initial_parameters, fit, "
                "evaluate and sizes (or return a Flower NumPyClient)"
            )
        self.task = task
        self.on_error = on_error
        self._lock = threading.Lock()
        spec = self._call("spec", lambda: task.spec)
        if not isinstance(spec, TaskSpec):
            raise TaskError(f"spec is a {type(spec).__name__}, not a TaskSpec")
        if not isinstance(spec.key, str) or not 0 < len(spec.key) <= MAX_SPEC:
            raise TaskError(f"spec key must be 1-{MAX_SPEC} characters, got {spec.key!r:.60}")
        if not spec.key.isprintable():
            raise TaskError(f"spec key {spec.key!r:.60} has unprintable characters")
        self.spec: TaskSpec = spec
        initial = self._call("initial_parameters", task.initial_parameters)
        self._answer("initial_parameters", initial)
        where = _not_finite(initial)
        if where is not None:
            self._fail(f"initial_parameters hold NaN or infinite values in array {where}")
        self._initial = [np.array(p, copy=True) for p in initial]
        probe = getattr(task, "probe_samples", None)
        if probe is not None and (isinstance(probe, bool) or not isinstance(probe, int)):
            raise TaskError(f"probe_samples must be a positive integer or None, got {probe!r}")
        if probe is not None and probe < 1:
            raise TaskError(f"probe_samples must be a positive integer or None, got {probe}")
        self.probe_samples: int | None = probe
        self.sizes()

    # -- calls -----------------------------------------------------------------------------

    def initial_parameters(self) -> Parameters:
        """A copy of the task's initial parameters (asked once, checked against the spec)."""
        return [p.copy() for p in self._initial]

    def fit(self, parameters: Sequence[np.ndarray], config: Config) -> Fitted:
        """The task's fit from ``parameters`` (made to fit the spec first).

        Raises
        ------
        TaskError
            The task failed or answered wrong (a type, a count, a shape or a dtype).
        ValueError
            ``parameters`` do not fit the spec or are not finite, or the fit made values that
            are not finite: a group's model can make training diverge, so that is not the
            task's fault (that round's fit fails; `check_task` makes it a `TaskError`).
        """
        given = self.conform(parameters)
        fitted = self._call("fit", lambda: self.task.fit(given, dict(config)))
        if not isinstance(fitted, Fitted):
            self._fail(f"fit returned a {type(fitted).__name__}, not a Fitted")
        self._answer("fit", fitted.parameters)
        where = _not_finite(fitted.parameters)
        if where is not None:
            raise ValueError(f"fit returned NaN or infinite values in array {where}")
        examples = self._count("fit", "examples", fitted.examples, low=1)
        loss = fitted.loss
        if not (isinstance(loss, int | float) and not isinstance(loss, bool)):
            self._fail(f"fit returned a loss of type {type(loss).__name__}, not a number")
        train = self.sizes().train
        if examples > train:
            self._fail(f"fit trained on {examples} examples but sizes() says train={train}")
        return Fitted(list(fitted.parameters), examples, float(loss))

    def evaluate(self, parameters: Sequence[np.ndarray], split: SplitName) -> Scored:
        """The task's evaluation of ``parameters`` on ``split`` (conformed as in `fit`)."""
        given = self.conform(parameters)
        scored = self._call("evaluate", lambda: self.task.evaluate(given, split))
        if not isinstance(scored, Scored):
            self._fail(f"evaluate returned a {type(scored).__name__}, not a Scored")
        accuracy = _number(scored.accuracy)
        if accuracy is None or not 0.0 <= accuracy <= 1.0:
            self._fail(f"evaluate returned accuracy {scored.accuracy!r}, not a number in [0, 1]")
        loss = scored.loss.item() if isinstance(scored.loss, np.number) else scored.loss
        if isinstance(loss, bool) or not isinstance(loss, int | float) or loss < 0:
            self._fail(f"evaluate returned loss {scored.loss!r}, not a number >= 0")
        # A model can be bad enough for an infinite loss: the worst loss, not a broken task.
        loss = loss if loss <= MAX_LOSS else MAX_LOSS  # NaN fails the test: MAX_LOSS too
        examples = self._count("evaluate", "examples", scored.examples, low=1)
        if split == "val" and self.probe_samples is not None and examples > self.probe_samples:
            self._fail(
                f"evaluate used {examples} validation examples; probe_samples is "
                f"{self.probe_samples}"
            )
        return Scored(float(accuracy), float(loss), examples)  # type: ignore[arg-type]

    def sizes(self) -> DataSizes:
        """The task's data sizes, checked."""
        sizes = self._call("sizes", self.task.sizes)
        if not isinstance(sizes, DataSizes):
            self._fail(f"sizes returned a {type(sizes).__name__}, not DataSizes")
        return DataSizes(
            *(self._count("sizes", f, getattr(sizes, f), low=0) for f in ("train", "val", "test"))
        )

    def switch_data(self, data: Any) -> None:
        """The task's own ``switch_data(data)``, between two of its calls (a task that loads
        its own data has none: ValueError)."""
        switch = getattr(self.task, "switch_data", None)
        if not callable(switch):
            raise ValueError(f"task {self.spec.key} cannot switch its data at run time")
        with self._lock:
            switch(data)

    def describe(self) -> dict[str, str | int | float | None]:
        """The task's ``describe()`` as the registry takes it: flat, short, at most 8 keys."""
        describe = getattr(self.task, "describe", None)
        raw = self._call("describe", describe) if callable(describe) else None
        out: dict[str, str | int | float | None] = {}
        if isinstance(raw, Mapping):
            for key, value in list(raw.items())[:MAX_DESCRIBE_KEYS]:
                name = str(key)[:64]
                if not name:
                    continue
                number = _number(value)
                if value is None or (number is not None and abs(number) < 2**53):
                    out[name] = value if isinstance(value, int | float | None) else number
                else:
                    out[name] = str(value)[:MAX_DESCRIBE_TEXT]
        # The escaped size is an upper bound of any JSON encoding's: drop the last entries
        # until it fits (control characters and emoji in a text are six to twelve bytes each).
        while out and len(json.dumps(out, ensure_ascii=True)) > MAX_DESCRIBE_BYTES:
            out.popitem()
        out.setdefault("description", self.spec.key[:MAX_DESCRIBE_TEXT])
        return out

    def conform(self, parameters: Sequence[np.ndarray]) -> Parameters:
        """``parameters`` in the spec's dtypes (copies); ValueError when the count or a shape
        differs or a value is not finite (never handed to the task's code)."""
        arrays = [np.asarray(p) for p in parameters]
        reason = self.spec.mismatch(arrays, dtypes=False)
        if reason is not None:
            raise ValueError(f"parameters do not fit the spec: {reason}")
        where = _not_finite(arrays)
        if where is not None:
            raise ValueError(f"parameters hold NaN or infinite values in array {where}")
        return [
            np.array(a, dtype=s.dtype, copy=True)
            for a, s in zip(arrays, self.spec.arrays, strict=True)
        ]

    # -- checking --------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                return fn()
            except TaskError as exc:
                self._fail(str(exc))
            except Exception as exc:  # the task's own code: any failure is the task's
                text = " ".join(str(exc).split())[:300]
                self._fail(f"{what} raised {type(exc).__name__}" + (f": {text}" if text else ""))

    def _answer(self, what: str, parameters: Any) -> None:
        reason = self.spec.mismatch(parameters)
        if reason is not None:
            self._fail(f"{what} returned {reason}")

    def _count(self, what: str, field: str, value: Any, *, low: int) -> int:
        if isinstance(value, np.integer):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**53:
            self._fail(f"{what} returned {field}={value!r}, not an integer >= {low}")
        return int(value)

    def _fail(self, message: str) -> NoReturn:
        if self.on_error is not None:
            self.on_error(message)
        raise TaskError(message)


def _not_finite(arrays: Sequence[np.ndarray]) -> int | None:
    """Index of the first array with a NaN or an infinity (None: all finite)."""
    for i, array in enumerate(arrays):
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            return i
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, np.floating | np.integer):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class TaskReport:
    """What `check_task` measured: the spec, the data sizes, one fit and one evaluate."""

    spec: TaskSpec
    sizes: DataSizes
    probe_samples: int | None
    fitted: Fitted
    scored: Scored
    fit_seconds: float
    probe_seconds: float


def check_task(task: Any) -> TaskReport:
    """Run one fit from the initial parameters and one evaluate of the result, checking both.

    Raises
    ------
    TaskError
        Naming the first thing that is wrong.
    """
    guarded = task if isinstance(task, GuardedTask) else GuardedTask(task)
    started = time.perf_counter()
    try:
        fitted = guarded.fit(guarded.initial_parameters(), {"server_round": 0, "seed": 0})
    except TaskError:
        raise
    except ValueError as exc:  # from its own initial parameters: the task's doing
        raise TaskError(str(exc)) from None
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scored = guarded.evaluate(fitted.parameters, "val")
    probe_seconds = time.perf_counter() - started
    return TaskReport(
        guarded.spec,
        guarded.sizes(),
        guarded.probe_samples,
        fitted,
        scored,
        fit_seconds,
        probe_seconds,
    )
