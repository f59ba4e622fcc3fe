"""A node's state directory: its keys and what the registry issued it, kept across restarts.

One file, ``identity.json`` (the node id, both secret keys, the credential, the ticket, the TLS
certificate and the network's CA certificate), in a directory only the owner may enter, written
owner-read-write only and replaced atomically. A file that others may read is refused rather than
used: its keys must be considered leaked.

The default directory (``default_state_dir``) is per user and per node name:
``$XDG_STATE_HOME/mycelium/<name>``, else ``~/.local/state/mycelium/<name>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from pathlib import Path

from mycelium_p2p.identity import IdentityError, NodeIdentity

FILE = "identity.json"
#: Largest identity file read (keys, certificates and a ticket are a few KiB).
MAX_BYTES = 64 * 1024


def default_state_dir(name: str | None) -> Path:
    """The per-user default state directory of the node called ``name`` (default: "node")."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mycelium" / (name or "node")


def load_or_create(state_dir: str | Path, node_id: str | None = None) -> NodeIdentity:
    """The identity kept in ``state_dir``, or a new one (with ``node_id`` if given) saved there.

    Raises
    ------
    IdentityError
        If the file is readable by others, does not parse, or belongs to another node id.
    """
    path = Path(state_dir) / FILE
    if not path.exists():
        identity = NodeIdentity(node_id) if node_id else _new_identity()
        save(identity, state_dir)
        return identity
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): its keys must be "
            "considered leaked; make a new state directory (or chmod 600 if you are sure)"
        )
    raw = path.read_bytes()[: MAX_BYTES + 1]
    if len(raw) > MAX_BYTES:
        raise IdentityError(f"{path} is larger than {MAX_BYTES} bytes")
    try:
        state = json.loads(raw)
    except ValueError as exc:
        raise IdentityError(f"{path} is not JSON: {exc}") from None
    if not isinstance(state, dict):
        raise IdentityError(f"{path} is not a JSON object")
    identity = NodeIdentity.from_state(state)
    if node_id and identity.node_id != node_id:
        raise IdentityError(
            f"{path} belongs to node {identity.node_id!r}, not {node_id!r}: "
            "give each node a state directory of its own"
        )
    return identity


def save(identity: NodeIdentity, state_dir: str | Path) -> None:
    """Write ``identity`` to ``state_dir`` (created owner-only), owner-only, atomically."""
    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):  # a directory made earlier with a looser mode
        os.chmod(folder, 0o700)
    tmp = folder / f".{FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(identity.to_state(), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, folder / FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _new_identity() -> NodeIdentity:
    return NodeIdentity(uuid.uuid4().hex[:12])
