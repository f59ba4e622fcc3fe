"""Where log lines go: rich's handler on a terminal, plain lines in a pipe, JSON for machines."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("auto", "rich", "plain", "json")
PLAIN = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def interactive(stream: Any = None) -> bool:
    """A person is watching ``stream`` (default: stderr): a terminal, and not a CI job."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("CI")


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Send log records to stderr at ``level`` in format ``fmt`` (one of :data:`FORMATS`).

    ``auto`` is ``rich`` on a terminal and ``plain`` (one line per event, with time and
    logger) otherwise. Libraries' own chatter stays at WARNING.
    """
    if fmt == "auto":
        fmt = "rich" if interactive() else "plain"
    handler: logging.Handler
    if fmt == "rich":
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True),
            show_path=False,
            log_time_format="%H:%M:%S",
            markup=False,
            rich_tracebacks=False,
        )
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter(PLAIN, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Libraries' own chatter: Flower's, httpx's (a line per heartbeat), alembic's (imported by
    # Flower, a line per plugin).
    for name in ("flwr", "httpx", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_options(default_level: str = "INFO") -> Callable[[F], F]:
    """``--log-level`` and ``--log-format`` (``MYCELIUM_LOG_LEVEL``, ``MYCELIUM_LOG_FORMAT``)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--log-format",
            type=click.Choice(FORMATS),
            default="auto",
            show_default=True,
            envvar="MYCELIUM_LOG_FORMAT",
            show_envvar=True,
            help="rich on a terminal, plain lines otherwise (auto); json: one object per line.",
        )(f)
        return click.option(
            "--log-level",
            type=click.Choice(LEVELS, case_sensitive=False),
            help="Least severe records shown.",
            default=default_level,
            show_default=True,
            envvar="MYCELIUM_LOG_LEVEL",
            show_envvar=True,
        )(f)

    return decorate
