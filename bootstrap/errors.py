"""The registry's refusals, each carrying the HTTP status the API layer maps it to."""

from __future__ import annotations


class StoreError(Exception):
    """A request the registry refuses; ``status`` is the HTTP status it maps to."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(StoreError):
    """An unknown node or group id."""

    status = 404


class Forbidden(StoreError):
    """Not allowed: by the group's join policy, or not this caller's to do."""

    status = 403


class Unauthorized(StoreError):
    """No credential, or one the registry does not know (or revoked)."""

    status = 401


class Conflict(StoreError):
    """The request conflicts with the current state (full group, stale term, not leader...)."""

    status = 409
