"""Which of this machine's addresses other machines can reach.

A node or observer advertises an address in gossip and in group records; peers send to it. On a
LAN that must be the interface that leads to the rest of the network, never ``127.0.0.1``. The
kernel knows it: connecting a UDP socket (no packet is sent) picks the source address of the
route to a peer, which is the address that peer can answer.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"


def host_of(address: str) -> str:
    """The host part of ``host:port``, ``host`` or ``http://host:port/...``."""
    if "://" in address:
        return urlsplit(address).hostname or ""
    host, sep, _port = address.rpartition(":")
    return host if sep else address


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and 127.0.0.0/8 (and ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True for an empty host or ``0.0.0.0``: binds every interface, names none of them."""
    return host in ("", "0.0.0.0", "*")


def route_source(host: str) -> str:
    """The local IPv4 address of the route to ``host`` (``127.0.0.1`` if there is none)."""
    try:
        target = socket.getaddrinfo(host, 9, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(target)  # UDP: only a route look-up, nothing goes on the wire
            return str(probe.getsockname()[0])
    except (OSError, IndexError):
        return LOOPBACK


def reachable_address(targets: Iterable[str], bind_host: str = "") -> str:
    """The address to advertise to peers at ``targets`` (addresses or URLs).

    A specific ``bind_host`` is the only address the sockets listen on, so it wins; otherwise the
    source address of the route to the first target that is not on this machine; otherwise
    loopback (every peer is local).
    """
    if not is_wildcard(bind_host):
        return bind_host
    for target in targets:
        host = host_of(target)
        if host and not is_loopback(host):
            return route_source(host)
    return LOOPBACK


def registry_base_url(text: str) -> str:
    """The base URL of a registry as people type it: ``host:port`` gets ``http://``, and a path
    (``/docs``, ``/groups``, a trailing ``/``) is dropped, since every API path starts at the root.

    Raises
    ------
    ValueError
        For a scheme other than http or https, no host, or a port that is not a number.
    """
    given = text.strip()
    url = given if "://" in given else f"http://{given}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"registry URL {given!r}: use http:// or https://")
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError(f"registry URL {given!r}: the port is not a number up to 65535") from None
    if not parts.hostname:
        raise ValueError(f"registry URL {given!r} names no host")
    return f"{parts.scheme}://{parts.netloc}"


def registry_base_urls(text: str) -> str:
    """:func:`registry_base_url` of each comma-separated URL, joined by commas again."""
    return ",".join(registry_base_url(u) for u in text.split(",") if u.strip())


def bind_problem(host: str, port: int) -> str | None:
    """Why a listening socket cannot bind ``host:port`` now (None: it can).

    Binds a TCP socket with ``SO_REUSEADDR``, as ZeroMQ and gRPC do, so that connections of a
    previous run still in TIME_WAIT do not count; a program listening there does. Port 0 checks
    only that ``host`` is an address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
