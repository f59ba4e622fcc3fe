"""Addresses and gRPC channels: check an address, wait until a server listens, close cleanly."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc


def check_address(address: str) -> str:
    """Return ``address`` if it is ``host:port`` with a valid port, else raise ValueError."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return address


@dataclass(frozen=True)
class MutualTls:
    """What a member presents and expects on a mutual-TLS channel: the CA, its own key and
    certificate, and the DNS name the server's certificate must carry (the leader of record's,
    ``identity.dns_name``)."""

    root_certificates: bytes
    private_key: bytes
    certificate_chain: bytes
    server_name: str


def secure_channel(
    address: str, tls: MutualTls, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A TLS channel that presents the member's certificate and accepts only a server whose
    certificate, from the CA, names ``tls.server_name``."""
    credentials = grpc.ssl_channel_credentials(
        tls.root_certificates, tls.private_key, tls.certificate_chain
    )
    opts = [*(options or []), ("grpc.ssl_target_name_override", tls.server_name)]
    return grpc.secure_channel(address, credentials, options=opts)


def wait_for_server(
    address: str,
    timeout: float,
    cancelled: Callable[[], bool] | None = None,
    root_certificates: bytes | None = None,
    mutual: MutualTls | None = None,
) -> bool:
    """True once a gRPC server accepts connections at ``address`` (within ``timeout`` s).

    ``cancelled`` is polled every 0.1 s; when it returns True the wait ends with False. With
    ``root_certificates`` (PEM) the channel is TLS and is ready only once the server's
    certificate verifies against them; with ``mutual``, only once both ends' do.
    """
    if mutual is not None:
        channel = secure_channel(address, mutual)
    elif root_certificates is None:
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
