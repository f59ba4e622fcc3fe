"""Addresses and gRPC channels: check an address, wait until a server listens, close cleanly."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc


def check_address(address: str) -> str:
    """Return ``address`` if it is ``host:port`` with a valid port, else raise ValueError."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return address


def wait_for_server(
    address: str,
    timeout: float,
    cancelled: Callable[[], bool] | None = None,
    root_certificates: bytes | None = None,
) -> bool:
    """True once a gRPC server accepts connections at ``address`` (within ``timeout`` s).

    ``cancelled`` is polled every 0.1 s; when it returns True the wait ends with False. With
    ``root_certificates`` (PEM) the channel is TLS and is ready only once the server's
    certificate verifies against them.
    """
    if root_certificates is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates))
    future = grpc.channel_ready_future(channel)
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancelled is not None and cancelled()):
                return False
            try:
                future.result(timeout=min(remaining, 0.1))
                return True
            except grpc.FutureTimeoutError:
                continue
    finally:
        future.cancel()
        _close_after_polling(channel)


def _close_after_polling(channel: grpc.Channel, limit: float = 0.5) -> None:
    """Close ``channel`` once grpc's connectivity-polling thread has let go of it.

    That thread re-checks for subscribers every 0.2 s; a channel closed under it makes it raise
    "Cannot monitor channel state: Channel closed!" (harmless, but an exception in a thread).
    """
    state = getattr(channel, "_connectivity_state", None)  # grpc internals: absent, just close
    deadline = time.monotonic() + limit
    while getattr(state, "polling", False) and time.monotonic() < deadline:
        time.sleep(0.01)
    channel.close()
