"""A node's id kept in a state folder, so that a restarted node is the same node.

The registry and the gossip layer know a node by its id: a node that restarts with a new id
leaves a stale entry behind and loses its place in its group. With a state folder the id is made
once and read back at every start (a node with a token keeps it in its keystore instead, see
``mycelium_p2p.keystore``). A lock on the folder keeps two running nodes from sharing an
id (the lock is released by the operating system when the process ends, even by a crash).
"""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from pathlib import Path
from typing import IO

ID_FILE = "node-id"
LOCK_FILE = "node.lock"
_ID = re.compile(r"[0-9a-f]{12}")


class StateDirError(OSError):
    """The state folder cannot be used: not creatable, not readable, or in use."""


def new_id() -> str:
    """12 random hex digits, as a node's id."""
    return uuid.uuid4().hex[:12]


def claim(folder: Path, keep_id: bool = True) -> tuple[str | None, IO[str]]:
    """Lock ``folder`` for this process and return the node id kept there (made on first use).

    Parameters
    ----------
    folder
        The state folder (made with its parents).
    keep_id
        Read or make the id file (default: True); False only locks (a node with a token keeps
        its identity, id included, in the keystore's file in the same folder).

    Returns
    -------
    tuple
        The id (None when ``keep_id`` is false) and the open lock file: keep it open while the
        node runs.

    Raises
    ------
    StateDirError
        The folder cannot be created or read, holds something that is not an id, or another
        running node holds its lock.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder / LOCK_FILE).open("a")
    except OSError as exc:
        raise StateDirError(f"cannot use state folder {folder}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise StateDirError(f"state folder {folder} is in use by another running node") from None
    try:
        return (_read_or_make(folder / ID_FILE) if keep_id else None), lock
    except BaseException:
        lock.close()
        raise


def _read_or_make(path: Path) -> str:
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateDirError(f"cannot read {path}: {exc}") from None
    if kept is not None:
        if not _ID.fullmatch(kept):
            raise StateDirError(f"{path} does not hold a node id (12 hex digits); remove it")
        return kept
    node_id = new_id()
    partial = path.with_suffix(".partial")
    try:
        partial.write_text(node_id + "\n")
        os.replace(partial, path)  # whole or absent, even if the machine stops mid-write
    except OSError as exc:
        raise StateDirError(f"cannot write {path}: {exc.strerror or exc}") from None
    return node_id
