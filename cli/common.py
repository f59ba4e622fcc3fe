"""What several commands share: one-line errors, ``--debug``, the secret, the registry's URL.

Every mistake a user can make ends in one ``Error:`` line on stderr and a non-zero exit (2 for
usage, 1 for the rest); a traceback only with ``--debug`` (or ``MYCELIUM_DEBUG=1``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: The registry's URL in the environment, for every command that takes one.
REGISTRY_ENV = "MYCELIUM_REGISTRY_URL"
#: Its older name (``status`` read it): still read, with a warning.
DEPRECATED_REGISTRY_ENV = "MYCELIUM_BOOTSTRAP"
DEFAULT_REGISTRY = "http://localhost:8000"


class SettingsError(click.ClickException):
    """A bad setting from a file or the environment: one line, exit 2, no usage text."""

    exit_code = 2


def fail(message: str, status: int = 1) -> NoReturn:
    """One line on stderr, then exit with ``status`` (no traceback)."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(status)


def warn(message: str) -> None:
    """One ``Warning:`` line on stderr."""
    click.echo(f"Warning: {message}", err=True)


# ---- --debug --------------------------------------------------------------------------------


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["mycelium.debug"] = True
    return value


def debug_option(help: str = "Tracebacks on errors.") -> Callable[[F], F]:
    """``--debug`` (or ``MYCELIUM_DEBUG=1``): unexpected errors show their traceback."""
    return click.option(
        "--debug",
        is_flag=True,
        envvar="MYCELIUM_DEBUG",
        show_envvar=True,
        callback=_set_debug,
        help=help,
    )


def debugging(ctx: click.Context) -> bool:
    """Whether ``--debug`` was given to the command or to ``mycelium`` itself."""
    return bool(ctx.meta.get("mycelium.debug")) or os.environ.get("MYCELIUM_DEBUG", "") not in (
        "",
        "0",
    )


# ---- the secret -----------------------------------------------------------------------------


def token_options(what: str = "Network secret") -> Callable[[F], F]:
    """``--token SECRET`` and ``--token-file FILE`` (which keeps the secret out of ``ps``)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--token-file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="MYCELIUM_TOKEN_FILE",
            show_envvar=True,
            help="File whose first line is the secret (other users cannot read it in `ps`).",
        )(f)
        return click.option(
            "--token", envvar="MYCELIUM_TOKEN", show_envvar=True, metavar="SECRET", help=what
        )(f)

    return decorate


def read_token(ctx: click.Context, token: str | None, token_file: Path | None) -> str | None:
    """The secret from ``--token`` or ``--token-file``; the command line beats the environment.

    Raises
    ------
    click.BadParameter
        Both given at the same level, or a file that cannot be read or holds no secret.
    """
    if token_file is not None and token:
        typed = click.core.ParameterSource.COMMANDLINE
        given = (
            ctx.get_parameter_source("token") == typed,
            ctx.get_parameter_source("token_file") == typed,
        )
        if given == (True, False):
            return token
        if given != (False, True):
            raise click.BadParameter(
                "give the secret once: --token (MYCELIUM_TOKEN) or --token-file "
                "(MYCELIUM_TOKEN_FILE), not both",
                param_hint="--token-file",
            )
    if token_file is None:
        return token or None
    try:
        lines = token_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise click.BadParameter(
            f"cannot read {token_file}: {reason}", param_hint="--token-file"
        ) from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise click.BadParameter(f"{token_file} holds no secret", param_hint="--token-file")
    return secret


# ---- the registry ---------------------------------------------------------------------------


def registry_option(help: str = "Registry URL.", default: str | None = None) -> Callable[[F], F]:
    """``--bootstrap URL``, or ``MYCELIUM_REGISTRY_URL`` (``MYCELIUM_BOOTSTRAP``: deprecated)."""
    shown = f"  [default: {default}]" if default else ""
    return click.option(
        "--bootstrap",
        "registry_url",
        metavar="URL",
        envvar=REGISTRY_ENV,
        show_envvar=True,
        help=help + shown,
    )


def registry_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``MYCELIUM_BOOTSTRAP`` when ``MYCELIUM_REGISTRY_URL`` is not set (with a warning)."""
    env = os.environ if env is None else env
    if env.get(REGISTRY_ENV) or not env.get(DEPRECATED_REGISTRY_ENV):
        return None
    warn(f"{DEPRECATED_REGISTRY_ENV} is deprecated; set {REGISTRY_ENV} instead")
    return env[DEPRECATED_REGISTRY_ENV]


def registry_base(url: str) -> str:
    """The registry's base URL: ``host:port`` gets ``http://`` and a path such as ``/docs`` is
    dropped (``click.BadParameter`` for a URL that cannot be a registry's)."""
    from mycelium_p2p.netaddr import registry_base_urls

    try:
        return registry_base_urls(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bootstrap") from None


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 node``, ``3 nodes``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


#: ``--alpha``: the label skew of the dirichlet scenario (``experiment``, ``bench policy``).
alpha_option = click.option(
    "--alpha",
    type=click.FloatRange(0.01, 1000),
    default=0.5,
    show_default=True,
    help="Label skew of the dirichlet scenario (smaller: fewer labels per node).",
)

#: ``--blend-weight``: how much of other groups' models a leader mixes in (``experiment``,
#: ``bench policy``); the nodes' setting of the same name.
blend_weight_option = click.option(
    "--blend-weight",
    type=click.FloatRange(0, 0.9),
    default=0.5,
    show_default=True,
    help="Largest share of other groups' models a leader mixes into its group's (0: never).",
)
