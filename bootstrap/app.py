"""The registry's HTTP API: a Litestar app over :class:`bootstrap.store.RegistryStore`.

Writes are queued for the commit thread (many to a transaction) and answered once committed;
heartbeats and the snapshot reads (groups, peers, network) are answered from memory on the event
loop; the other reads run on worker threads (peewee is synchronous). Errors are JSON with a
human-readable ``detail``: validation 400, missing token 401, join policy 403, unknown id 404,
conflicts (full group, stale term, duplicate id) 409, oversize body 413, database busy 503. An
unexpected error is logged and answered with a JSON 500, but the fuzz test shows none occur.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import peewee as pw
from litestar import Litestar, Request, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import MediaType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.exceptions.responses import create_exception_response
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_304_NOT_MODIFIED

from bootstrap.docs import assets_router, render_plugins
from bootstrap.expiry import ExpiryThread
from bootstrap.snapshot import Encoded
from bootstrap.store import LivenessConfig, RegistryStore, StoreError
from mycelium_p2p.limits import MAX_COUNTER
from mycelium_p2p.registry_api import (
    CreateGroupBody,
    EventOut,
    GroupOut,
    HealthOut,
    HeartbeatBody,
    HeartbeatOut,
    Id,
    JoinBody,
    LeaderBody,
    LeaveBody,
    NetworkOut,
    NodeOut,
    PerformanceBody,
    RegisterBody,
    parse_heartbeat,
    too_deep_field,
)

log = logging.getLogger("mycelium.registry")

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode

#: Largest accepted request body, in bytes (a register with a data summary is well under 1 KiB).
MAX_BODY_BYTES = 64 * 1024


class ConflictException(HTTPException):
    """409: the request conflicts with the registry's state."""

    status_code = 409


class ForbiddenException(HTTPException):
    """403: not allowed by the group's join policy."""

    status_code = 403


class TooLargeException(HTTPException):
    """413: the request body is larger than the registry accepts."""

    status_code = 413


class DatabaseBusyException(HTTPException):
    """503: the database stayed locked past SQLite's busy timeout; retry (``Retry-After``).

    Answered by the handler of peewee's OperationalError; declared so the schema lists it."""

    status_code = 503


# Documented error answers (OpenAPI) of reads and writes: every answer but 200/201 that a
# handler can give (the fuzz test checks each answer against this list).
_READ_ERRORS: list[type[HTTPException]] = [ValidationException, DatabaseBusyException]
_ONE_ERRORS: list[type[HTTPException]] = [*_READ_ERRORS, NotFoundException]
_WRITE_ERRORS: list[type[HTTPException]] = [
    ValidationException,
    NotAuthorizedException,
    NotFoundException,
    ConflictException,
    TooLargeException,
    DatabaseBusyException,
]


class RegistryRequest(Request[Any, Any, Any]):
    """A request whose JSON body nests past the decoder's recursion limit is a 400 naming the
    field (the decoder raises RecursionError, which would otherwise be a 500)."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            field = too_deep_field(await self.body())
            raise ValidationException(
                detail=f"{field}: nested too deeply (free-form maps are flat)"
            ) from None


def _store(state: State) -> RegistryStore:
    return state["store"]  # type: ignore[no-any-return]


async def require_token(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard for writes: with a token configured, ``Authorization: Bearer <token>`` is required.

    (Async: Litestar runs a synchronous guard on a worker thread, a thread hop per request.)"""
    token: str | None = connection.app.state.get("token")
    if not token:
        return
    header = connection.headers.get("authorization", "")
    scheme, _sep, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise NotAuthorizedException(detail="missing 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise NotAuthorizedException(detail="invalid bearer token")


_write = {
    "guards": [require_token],
    "raises": _WRITE_ERRORS,
    "security": [{"bearer": []}],
}
_read = {"sync_to_thread": True, "raises": _READ_ERRORS}
# Snapshot reads are answered from memory on the event loop.
_snapshot = {"raises": _READ_ERRORS}

PathId = Annotated[str, Parameter(max_length=256, description="node or group id")]


# ---- answers ------------------------------------------------------------------------------


async def _committed(future: Future[T]) -> T:
    """The result of a queued write, once its transaction committed."""
    return await asyncio.wrap_future(future)


def _matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``)."""
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _cached(request: Request[Any, Any, Any], answer: Encoded) -> Response[Any]:
    """An answer of a snapshot: its JSON with its ETag, or 304 (no body) if the client has it."""
    headers = {"ETag": answer.etag}
    if _matches(request.headers.get("if-none-match"), answer.etag):
        return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=answer.body, media_type=MediaType.JSON, headers=headers)


#: Documented on the snapshot reads: ``If-None-Match`` with the current ETag.
_NOT_MODIFIED = {
    HTTP_304_NOT_MODIFIED: ResponseSpec(
        data_container=None,
        description="Not modified: the If-None-Match header names the current ETag (no body)",
        generate_examples=False,
    )
}


# ---- nodes ----------------------------------------------------------------------------------


@post("/nodes/register", status_code=HTTP_200_OK, operation_id="registerNode", **_write)
async def register_node(state: State, data: RegisterBody) -> NodeOut:
    """Register or update a node (idempotent for the same id); it becomes alive."""
    store = _store(state)
    return await _committed(store.submit(store.writes.register, data))


def _heartbeat_schema(data: HeartbeatBody) -> None:
    """Never called: Litestar documents a handler's request body from a dependency's ``data``,
    so the heartbeat's schema comes from HeartbeatBody while its handler reads raw bytes."""


@post(
    "/nodes/{node_id:str}/heartbeat",
    status_code=HTTP_200_OK,
    operation_id="heartbeat",
    dependencies={"heartbeat_schema": Provide(_heartbeat_schema, sync_to_thread=False)},
    **_write,
)
async def heartbeat(state: State, node_id: PathId, body: bytes) -> HeartbeatOut:
    """Liveness plus the node's current metrics. Liveness does not depend on the metrics: with
    a refused field the heartbeat is still recorded, with the valid fields, and answered 400.

    Recorded in memory and answered at once; written to the database within a second. The
    answer names a few other live peers, so that nodes find each other without asking."""
    metrics, problems = parse_heartbeat(body)
    store = _store(state)
    node = store.try_heartbeat(node_id, metrics)
    if node is None:  # only the shared database knows this node yet
        node = await asyncio.to_thread(store.heartbeat, node_id, metrics)
    if problems:
        shown = "; ".join(problems[:5]) + (
            f" (and {len(problems) - 5} more)" if problems[5:] else ""
        )
        raise ValidationException(
            detail=f"refused {shown}; liveness was recorded, with the valid fields"
        )
    return store.with_peers(node)


# An explicit summary where a path has two methods: Litestar would name the wrapped sync
# handler "Asynccallable".
@delete(
    "/nodes/{node_id:str}",
    status_code=HTTP_200_OK,
    operation_id="removeNode",
    summary="RemoveNode",
    **_write,
)
async def remove_node(state: State, node_id: PathId) -> NodeOut:
    """Graceful leave: the node leaves its group and is marked gone."""
    store = _store(state)
    return await _committed(store.submit(store.writes.remove, node_id))


@get("/nodes", operation_id="listNodes", **_read)
def list_nodes(state: State) -> list[NodeOut]:
    """Every node with status (alive / suspect / dead / gone), group and metrics."""
    return _store(state).nodes()


@get("/nodes/{node_id:str}", operation_id="getNode", sync_to_thread=True, raises=_ONE_ERRORS)
def get_node(state: State, node_id: PathId) -> NodeOut:
    """One node."""
    return _store(state).node(node_id)


# ---- groups ---------------------------------------------------------------------------------


@post(
    "/groups",
    status_code=HTTP_201_CREATED,
    operation_id="createGroup",
    summary="CreateGroup",
    **_write,
)
async def create_group(state: State, data: CreateGroupBody) -> GroupOut:
    """Create a group; the founding leader is its first member (term 1)."""
    store = _store(state)
    return await _committed(store.submit(store.writes.create_group, data, store.group_id(data)))


@get("/groups", operation_id="listGroups", responses=_NOT_MODIFIED, **_snapshot)
async def list_groups(
    request: Request[Any, Any, Any],
    state: State,
    include_all: Annotated[
        bool, Parameter(query="all", description="include dissolved groups")
    ] = False,
) -> Response[list[GroupOut]]:
    """Active and leaderless groups (dissolved ones too with ``?all=true``); with an ETag."""
    return _cached(request, _store(state).snapshots.groups(include_dissolved=include_all))


@get(
    "/groups/{group_id:str}",
    operation_id="getGroup",
    responses=_NOT_MODIFIED,
    raises=_ONE_ERRORS,
)
async def get_group(
    request: Request[Any, Any, Any], state: State, group_id: PathId
) -> Response[GroupOut]:
    """One group, dissolved ones included; with an ETag."""
    answer = _store(state).snapshots.group(group_id)
    if answer is None:
        raise NotFoundException(detail=f"unknown group {group_id!r}")
    return _cached(request, answer)


@post("/groups/join", status_code=HTTP_200_OK, operation_id="joinGroup", **_write)
async def join_group(state: State, data: JoinBody) -> GroupOut:
    """Join a group in one transaction (capacity, join policy, model spec; leaves the previous
    group: a migration is one event)."""
    store = _store(state)
    return await _committed(
        store.submit(store.writes.join, data.node_id, data.group_id, data.reason)
    )


@post("/groups/leave", status_code=HTTP_200_OK, operation_id="leaveGroup", **_write)
async def leave_group(state: State, data: LeaveBody) -> NodeOut:
    """The node leaves its group."""
    store = _store(state)
    return await _committed(store.submit(store.writes.leave, data.node_id))


@put(
    "/groups/{group_id:str}/performance",
    operation_id="reportPerformance",
    guards=[require_token],
    raises=[*_WRITE_ERRORS],
    security=[{"bearer": []}],
)
async def report_performance(state: State, group_id: PathId, data: PerformanceBody) -> GroupOut:
    """The leader of the current term reports round metrics."""
    store = _store(state)
    return await _committed(store.submit(store.writes.report_performance, group_id, data))


@put(
    "/groups/{group_id:str}/leader",
    operation_id="claimLeader",
    guards=[require_token],
    raises=[*_WRITE_ERRORS],
    security=[{"bearer": []}],
)
async def claim_leader(state: State, group_id: PathId, data: LeaderBody) -> GroupOut:
    """Claim leadership with ``term = current + 1`` (compare-and-set: one claimant wins)."""
    store = _store(state)
    return await _committed(store.submit(store.writes.claim_leader, group_id, data))


# ---- discovery, snapshot, events, health ---------------------------------------------------


@get("/peers", operation_id="samplePeers", responses=_NOT_MODIFIED, **_snapshot)
async def sample_peers(
    request: Request[Any, Any, Any],
    state: State,
    limit: Annotated[int, Parameter(ge=1, le=1000, description="sample size")] = 8,
) -> Response[list[str]]:
    """A random sample of live nodes' gossip addresses (a new sample each time; the ETag names
    the set of live nodes it was drawn from)."""
    etag, sample = _store(state).snapshots.peers(limit)
    headers = {"ETag": etag}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=_encode(sample), media_type=MediaType.JSON, headers=headers)


@get("/network", operation_id="networkSnapshot", responses=_NOT_MODIFIED, **_read)
def network(
    request: Request[Any, Any, Any],
    state: State,
    events: Annotated[int, Parameter(ge=0, le=1000, description="recent events to include")] = 100,
) -> Response[NetworkOut]:
    """One snapshot: groups, nodes and recent events; with an ETag."""
    return _cached(request, _store(state).snapshots.network(events))


@get("/events", operation_id="listEvents", **_read)
def list_events(
    state: State,
    after: Annotated[int, Parameter(ge=0, le=MAX_COUNTER, description="last event id seen")] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000, description="page size")] = 1000,
) -> list[EventOut]:
    """The append-only event log, oldest first, after the given id."""
    return _store(state).events(after, limit)


@get("/health", operation_id="health", sync_to_thread=False)
def health(state: State) -> HealthOut:
    """Liveness of the service."""
    store = _store(state)
    return HealthOut(status="ok", schema_version=store.schema_version, time=store.clock())


# ---- errors ---------------------------------------------------------------------------------


def _error(request: Request[Any, Any, Any], status: int, detail: str) -> Response[Any]:
    return Response({"status_code": status, "detail": detail}, status_code=status)


def _on_store_error(request: Request[Any, Any, Any], exc: StoreError) -> Response[Any]:
    return _error(request, exc.status, exc.detail)


def _on_integrity_error(request: Request[Any, Any, Any], exc: pw.IntegrityError) -> Response[Any]:
    return _error(request, 409, f"conflicts with existing data: {exc}")


def _on_operational_error(
    request: Request[Any, Any, Any], exc: pw.OperationalError
) -> Response[Any]:
    log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
    response = _error(request, 503, f"database busy, retry: {exc}")
    response.headers["Retry-After"] = "1"
    return response


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # Name the refused fields in ``detail`` itself, not only in ``extra``.
        fields = "; ".join(
            f"{e.get('key') or 'body'}: {e.get('message')}"
            for e in exc.extra[:5]
            if isinstance(e, dict)
        )
        if fields:
            exc.detail = f"{exc.detail}: {fields}"
    return create_exception_response(request, exc)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(request, 500, f"internal error ({type(exc).__name__}); see the registry log")


# ---- factory --------------------------------------------------------------------------------


def create_app(
    db_path: str | Path,
    token: str | None = None,
    liveness: LivenessConfig | None = None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    expiry: bool = True,
) -> Litestar:
    """Build the registry app.

    Parameters
    ----------
    db_path : str or Path
        SQLite file (created with its schema on first start), or a PostgreSQL URL
        ``postgresql://USER@HOST:PORT/DB`` that several registries may share.
    token : str, optional
        When set, every write needs ``Authorization: Bearer <token>`` (default: None, open).
    liveness : LivenessConfig, optional
        Expiry timings (default: ``LivenessConfig()``).
    clock : callable
        Wall-clock seconds (default: ``time.time``).
    rng : random.Random, optional
        Randomness for peer samples and generated group ids (default: a fresh ``Random()``).
    expiry : bool
        Run the background expiry thread (default: True; tests on a fake clock turn it off
        and call ``app.state.store.sweep()`` themselves).
    """
    store = RegistryStore(db_path, liveness=liveness, clock=clock, rng=rng)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        store.open()
        sweeper = ExpiryThread(store) if expiry else None
        if sweeper is not None:
            sweeper.start()
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.stop()
            store.close()

    openapi = OpenAPIConfig(
        title="Mycelium registry",
        version="1",
        description="The bootstrap registry of a Mycelium network: nodes, groups, leaders, events.",
        path="/docs",
        render_plugins=render_plugins(),
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer", description="--token")
            }
        ),
    )
    return Litestar(
        route_handlers=[
            register_node,
            heartbeat,
            remove_node,
            list_nodes,
            get_node,
            create_group,
            list_groups,
            get_group,
            join_group,
            leave_group,
            report_performance,
            claim_leader,
            sample_peers,
            network,
            list_events,
            health,
            assets_router(),
        ],
        state=State({"store": store, "token": token or None}),
        lifespan=[lifespan],
        openapi_config=openapi,
        exception_handlers={
            StoreError: _on_store_error,
            pw.IntegrityError: _on_integrity_error,
            pw.OperationalError: _on_operational_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
        request_max_body_size=MAX_BODY_BYTES,
        request_class=RegistryRequest,
        # No logging config: Litestar would apply it with dictConfig, which closes every handler
        # of the process hosting the registry (a test's or an embedding program's log files).
        # Errors are mapped to answers by the handlers above and logged by this module.
        logging_config=None,
        debug=False,
    )


__all__ = ["ExpiryThread", "Id", "LivenessConfig", "create_app"]
