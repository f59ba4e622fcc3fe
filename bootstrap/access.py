"""Who is asking: the registry's credentials, and what each may do.

With a token (``--token``), every request but ``/health`` and ``/docs`` carries
``Authorization: Bearer <credential>``, one of:

- the **admission token** (``--token``): registers a *new* node (which enrols and gets its own
  credential), and reads;
- a **node credential** (issued at enrolment; the registry keeps only its SHA-256): that node
  acts for itself (registers again, heartbeats, leaves, joins and leaves groups, founds a group
  it leads, reports as its leader, claims its lead), and reads;
- the **operator token** (``--admin-token``): removes and revokes any node, and reads;
- the **observer token** (``--observer-token``): reads, and asks for observer tickets (the
  viewer).

A missing, unknown or revoked credential is 401; a known one asking for what it may not do is
403. Without a token everything is open, as before: the caller is :data:`OPEN`.

:class:`Enrolled` is the registry's memory of the identities table (credential hash to node id,
revoked ids, the signed revocation list), so a heartbeat is checked without the database.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from typing import Literal

from bootstrap.errors import Forbidden, Unauthorized
from mycelium_p2p.identity import credential_hash

Kind = Literal["open", "admin", "admission", "observer", "node"]


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request."""

    kind: Kind
    node_id: str | None = None

    def acts_for(self, node_id: str) -> None:
        """Allow only the node ``node_id`` itself (or anyone without a token); else 403."""
        if self.kind == "open" or (self.kind == "node" and self.node_id == node_id):
            return
        who = f"node {self.node_id!r}" if self.kind == "node" else f"the {self.kind} credential"
        raise Forbidden(f"{who} may not act for node {node_id!r}")

    def operator(self) -> bool:
        return self.kind in ("open", "admin")


OPEN = Caller("open")


@dataclass(frozen=True)
class Entry:
    """One enrolled node as the registry remembers it."""

    node_id: str
    credential_hash: str
    curve_key: str
    revoked: bool


class Enrolled:
    """The identities table in memory (thread-safe; the commit thread keeps it current)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_id: dict[str, Entry] = {}
        self.by_hash: dict[str, str] = {}
        self.crl_serial = 0
        self.crl = ""  # the signed revocation list, base64 ("" before the first revocation)

    def put(self, entry: Entry) -> None:
        with self._lock:
            old = self.by_id.get(entry.node_id)
            if old is not None:
                self.by_hash.pop(old.credential_hash, None)
            self.by_id[entry.node_id] = entry
            self.by_hash[entry.credential_hash] = entry.node_id

    def drop(self, node_id: str) -> None:
        with self._lock:
            old = self.by_id.pop(node_id, None)
            if old is not None:
                self.by_hash.pop(old.credential_hash, None)

    def clear(self) -> None:
        with self._lock:
            self.by_id.clear()
            self.by_hash.clear()

    def node(self, credential: str) -> Entry | None:
        """The enrolled node whose credential this is (None if unknown)."""
        node_id = self.by_hash.get(credential_hash(credential))
        return None if node_id is None else self.by_id.get(node_id)

    def known(self, node_id: str) -> bool:
        return node_id in self.by_id


class Access:
    """The registry's secrets and how a bearer header maps to a :class:`Caller`.

    Parameters
    ----------
    admission, admin, observer : str | None
        ``--token``, ``--admin-token``, ``--observer-token`` (None: not set).
    enrolled : Enrolled
        The identities the store keeps in memory.
    """

    def __init__(
        self,
        admission: str | None,
        admin: str | None,
        observer: str | None,
        enrolled: Enrolled,
    ) -> None:
        self.admission = admission or None
        self.admin = admin or None
        self.observer = observer or None
        self.enrolled = enrolled

    @property
    def open(self) -> bool:
        """No token: everything is open, as before."""
        return self.admission is None

    def caller(self, header: str | None, lookup: object = None) -> Caller:
        """The caller a bearer header names (401 :class:`Unauthorized` if none).

        ``lookup(credential)`` (optional) finds a credential the memory does not know yet (one
        another registry on a shared database issued a moment ago).
        """
        if self.open:
            return OPEN
        scheme, _sep, given = (header or "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("missing 'Authorization: Bearer <credential>' header")
        secret = given.encode()
        for kind, token in (
            ("admin", self.admin),
            ("admission", self.admission),
            ("observer", self.observer),
        ):
            if token is not None and hmac.compare_digest(secret, token.encode()):
                return Caller(kind)  # type: ignore[arg-type]
        entry = self.enrolled.node(given)
        if entry is None and callable(lookup):
            entry = lookup(given)
        if entry is None:
            raise Unauthorized("invalid bearer credential")
        if entry.revoked:
            raise Unauthorized(f"the credential of node {entry.node_id!r} was revoked")
        return Caller("node", entry.node_id)
