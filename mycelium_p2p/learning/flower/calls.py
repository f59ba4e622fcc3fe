"""Recording each member's Flower stream, so that a member can leave its server at once.

The legacy client keeps its gRPC stream private, so a client could only leave when its server
sends something. The channel of each member's connection thread is wrapped so that its stream
(the Join call) is recorded; `client.MemberClient` cancels that call to leave at once (the
blocked receive raises, Flower closes the channel in its own thread). Cancelling a call is safe
at any moment; closing a channel is not (an RPC started on a closed channel crashes grpc 1.85).
A leave requested before the call exists leaves a mark, so the call is cancelled at birth. Only
registered member threads are touched: thread ids get reused.

``setup.install`` puts `recording_create_channel` in place of the legacy client's channel
factory; the rest is the bookkeeping `client.MemberClient` uses.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import grpc
from flwr.compat.client.grpc_client import connection as _client_connection

from mycelium_p2p.learning.flower.channels import MutualTls, secure_channel

_member_threads: set[int] = set()
_calls: dict[int, Any] = {}
_cancelled: set[int] = set()
_calls_lock = threading.Lock()
ORIGINAL_CREATE_CHANNEL = _client_connection.create_channel
_ORIGINAL_SIGNATURE = inspect.signature(ORIGINAL_CREATE_CHANNEL)
_mutual: dict[int, MutualTls] = {}


class _CallRecordingChannel:
    """A grpc channel whose stream-stream calls are recorded for the opening thread."""

    def __init__(self, channel: grpc.Channel, ident: int) -> None:
        self._channel = channel
        self._ident = ident

    def stream_stream(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        multicallable = self._channel.stream_stream(*args, **kwargs)
        ident = self._ident

        def invoke(*call_args: Any, **call_kwargs: Any) -> Any:
            call = multicallable(*call_args, **call_kwargs)
            if call_args:
                requests = call_args[0]
                call.add_done_callback(lambda _call: _end_requests(requests))
            with _calls_lock:
                stillborn = ident in _cancelled
                _cancelled.discard(ident)
                if not stillborn:
                    _calls[ident] = call
            if stillborn:
                call.cancel()
            return call

        return invoke

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def _end_requests(requests: Any) -> None:
    """Let grpc's request-consumer thread exit once the Join call is over.

    Flower's request iterator is ``iter(queue.get, None)``; grpc reads it on a thread that
    stays blocked in ``queue.get`` after the call ends (one leaked thread per session).
    Putting the sentinel ends it. Anything unexpected is left alone.
    """
    try:
        getter, sentinel = requests.__reduce__()[1]
        getter.__self__.put_nowait(sentinel)
    except Exception:
        pass


def recording_create_channel(*args: Any, **kwargs: Any) -> Any:
    ident = threading.get_ident()
    with _calls_lock:
        mutual = _mutual.get(ident)
    if mutual is None:
        channel = ORIGINAL_CREATE_CHANNEL(*args, **kwargs)
    else:  # flwr's factory takes no client certificate: the member's own channel
        bound = _ORIGINAL_SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        limit = bound.arguments["max_message_length"]
        channel = secure_channel(
            bound.arguments["server_address"],
            mutual,
            [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)],
        )
    with _calls_lock:
        if ident not in _member_threads:
            return channel
    return _CallRecordingChannel(channel, ident)


def set_thread_tls(ident: int, mutual: MutualTls | None) -> None:
    """The mutual-TLS material of the member thread ``ident``'s next channel (None: flwr's)."""
    with _calls_lock:
        if mutual is None:
            _mutual.pop(ident, None)
        else:
            _mutual[ident] = mutual


def register_member_thread(ident: int, active: bool) -> None:
    with _calls_lock:
        _calls.pop(ident, None)
        _mutual.pop(ident, None)
        _cancelled.discard(ident)
        if active:
            _member_threads.add(ident)
        else:
            _member_threads.discard(ident)


def cancel_thread_call(thread_id: int | None) -> None:
    if thread_id is None:
        return
    with _calls_lock:
        if thread_id not in _member_threads:
            return
        call = _calls.pop(thread_id, None)
        if call is None:
            _cancelled.add(thread_id)
    if call is not None:
        call.cancel()


def forget_thread_call(thread_id: int) -> None:
    with _calls_lock:
        _calls.pop(thread_id, None)
        _cancelled.discard(thread_id)
