"""The network's certificate authority on disk: its key made at first start, readable by the
owner only.

With a token, the registry is the network's CA (``mycelium_p2p.identity.CertificateAuthority``):
its P-256 key signs node certificates, tickets, leases and the revocation list. The key and its
certificate live in a folder of their own (mode 0700; ``key.pem`` 0600, ``cert.pem`` 0644):

- beside an SQLite database by default: ``<db>.ca/`` (``mycelium_registry.db.ca/``);
- for PostgreSQL, ``--ca-dir DIR`` is required: every registry sharing the database needs a copy
  of the same folder (the first registry creates it; copy it to the others). The database keeps
  the CA certificate's fingerprint, so a registry started with another CA refuses to serve.

The key never enters the database: a database backup or a database user does not give anyone
the power to enrol nodes or grant leases.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mycelium_p2p.identity import CertificateAuthority, IdentityError

KEY_FILE = "key.pem"
CERT_FILE = "cert.pem"


class CaError(RuntimeError):
    """The CA folder cannot be read or made, or holds another network's CA."""


def default_dir(db_path: str | Path) -> Path:
    """Where the CA of an SQLite database lives: ``<db>.ca`` beside it."""
    return Path(f"{db_path}.ca")


def load_or_create(folder: str | Path) -> CertificateAuthority:
    """The CA kept in ``folder``; made there (key and certificate) when the folder has none.

    Raises
    ------
    CaError
        If the folder cannot be made or read, lets others read the key, or holds half a CA.
    """
    path = Path(folder)
    key_path, cert_path = path / KEY_FILE, path / CERT_FILE
    if not key_path.exists() and not cert_path.exists():
        return _create(path)
    if not key_path.exists() or not cert_path.exists():
        raise CaError(f"CA folder {path} has only one of {KEY_FILE} and {CERT_FILE}")
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CaError(
            f"CA key {key_path} can be read by others (mode {mode:o}); chmod 600 it first"
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{key_path} is not an elliptic-curve key")
        return CertificateAuthority(key, cert_path.read_bytes())
    except (OSError, ValueError, IdentityError) as exc:
        raise CaError(f"cannot read the CA in {path}: {exc}") from exc


def _create(path: Path) -> CertificateAuthority:
    ca = CertificateAuthority.create()
    try:
        path.mkdir(mode=0o700, parents=False, exist_ok=True)
        os.chmod(path, 0o700)
        fd = os.open(path / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(ca.key_pem())
            out.flush()
            os.fsync(out.fileno())
        (path / CERT_FILE).write_bytes(ca.cert_pem)
    except FileExistsError:  # another registry made it a moment ago: use that one
        return load_or_create(path)
    except OSError as exc:
        raise CaError(f"cannot make the CA folder {path}: {exc.strerror or exc}") from exc
    return ca
