"""Process-wide Flower settings, installed explicitly (never on import), once per process.

`install` is called by the node daemon, and by `GroupServer` and `MemberClient` when they are
built (it is idempotent), so that a program using them directly gets the same behaviour:

- no usage telemetry and no update check (a LAN has no internet, and nobody asked for it);
- Flower's own log at WARNING, and grpc's error log for a stream Flower's bridge closed on
  purpose dropped;
- the legacy client's channel factory records each member's stream (``calls.py``), so that a
  member can leave its server at once;
- arrays decoded from Flower messages one at a time: numpy parses each array's header with
  ``ast.literal_eval``, and CPython 3.11's parser is not safe when two threads compile at once
  ("AST constructor recursion depth mismatch"); a group's leader decodes in its server and its
  client thread together.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

_installed = False
_install_lock = threading.Lock()
_decode_lock = threading.Lock()


class _QuietBridgeClosed(logging.Filter):
    """Drop grpc's error log for a stream that Flower's bridge closed on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "GrpcBridgeClosed"


def install() -> None:
    """Put every process-wide Flower setting in place (see the module docstring)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # for child processes too
        os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
        from flwr.compat.client.grpc_client import connection
        from flwr.compat.common import parameter
        from flwr.supercore import telemetry

        from mycelium_p2p.learning.flower import calls

        # Read once when flwr was imported, which may have been before this call.
        telemetry.FLWR_TELEMETRY_ENABLED = os.environ["FLWR_TELEMETRY_ENABLED"]
        logging.getLogger("flwr").setLevel(logging.WARNING)
        logging.getLogger("grpc._server").addFilter(_QuietBridgeClosed())
        connection.create_channel = calls.recording_create_channel
        decode = parameter.bytes_to_ndarray

        def bytes_to_ndarray(tensor: bytes) -> Any:
            with _decode_lock:
                return decode(tensor)

        parameter.bytes_to_ndarray = bytes_to_ndarray
        _installed = True


def installed() -> bool:
    """Whether `install` ran in this process."""
    return _installed
