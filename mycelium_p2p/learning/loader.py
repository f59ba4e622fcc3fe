"""Load a task from the user's code: ``module:attribute`` or ``path/to/file.py:attribute``.

The attribute is a factory, called with the task options as keyword arguments (strings). It
returns a task (``task.Task``) or a stock Flower ``NumPyClient`` (its ``to_client()`` wrapper
is unwrapped), which `flower.adapter.ClientTask` adapts. A file's folder goes first on
``sys.path``, as when the file is run, so that it can import its neighbours. Every failure is a
``TaskError`` naming what is wrong: nothing of the user's code escapes as a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mycelium_p2p.learning.task import GuardedTask, TaskError, is_task


def split_reference(reference: str) -> tuple[str, str]:
    """``(module or file, attribute)`` of a reference; TaskError when it has no ``:attribute``."""
    where, sep, attribute = str(reference).strip().rpartition(":")
    if not sep or not where or not attribute:
        raise TaskError(f"task {reference!r} must be module:attribute or path/to/file.py:attribute")
    return where, attribute


def task_name(reference: str) -> str:
    """The factory's name in a spec: its module's last part and the attribute, e.g.
    ``client.client_fn`` for both ``examples/flower_cnn/client.py:client_fn`` and
    ``flower_cnn.client:client_fn``."""
    where, attribute = split_reference(reference)
    module = Path(where).stem if _is_file(where) else where.rpartition(".")[2]
    return f"{module}.{attribute}"


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def load_factory(reference: str) -> Callable[..., Any]:
    """Import the module or file of ``reference`` and return its (callable) attribute."""
    where, attribute = split_reference(reference)
    module = _import_file(Path(where)) if _is_file(where) else _import_module(where)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise TaskError(f"{where} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TaskError(f"{where}:{attribute} is a {type(target).__name__}, not a factory")
    return target  # type: ignore[no-any-return]


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise TaskError(
                f"no module {name!r} on sys.path (give a file as path/to/file.py:attribute)"
            ) from None
        raise TaskError(f"importing {name} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the user's module raised while importing
        raise TaskError(f"importing {name} failed: {_one_line(exc)}") from None


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise TaskError(f"no file {path}")
    resolved = path.resolve()
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"mycelium_task_{resolved.stem}_{abs(hash(str(resolved))) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TaskError(f"{path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if not isinstance(exc, Exception):
            raise
        raise TaskError(f"importing {path} failed: {_one_line(exc)}") from None
    return module


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build(reference: str, options: Mapping[str, str] | None = None) -> Any:
    """Call the factory of ``reference`` with ``options``; what it returned, unchecked."""
    factory = load_factory(reference)
    try:
        return factory(**dict(options or {}))
    except Exception as exc:
        raise TaskError(f"the factory raised {_one_line(exc)}") from None


def as_task(obj: Any, name: str) -> Any:
    """A factory's answer as a task: itself if it is one, a `ClientTask` for a NumPyClient."""
    if is_task(obj):
        return obj
    from mycelium_p2p.learning.flower.adapter import ClientTask, numpy_client_of

    client = numpy_client_of(obj)
    if client is not None:
        return ClientTask(client, name)
    raise TaskError(
        f"the factory returned a value of type {type(obj).__name__}: expected a task (spec, "
        "initial_parameters, fit, evaluate, sizes) or a Flower NumPyClient"
    )


def load_task(reference: str, options: Mapping[str, str] | None = None) -> GuardedTask:
    """The task ``reference`` names, built with ``options``, checked and guarded.

    Raises
    ------
    TaskError
        For a reference that does not load, a factory that raises or returns something else
        than a task or a NumPyClient, or a task whose spec or initial parameters are unusable.
    """
    return GuardedTask(as_task(build(reference, options), task_name(reference)))
