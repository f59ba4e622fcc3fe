"""The registry's HTTP API: a Litestar app over :class:`bootstrap.store.RegistryStore`.

Writes are queued for the commit thread (many to a transaction) and answered once committed;
heartbeats and the snapshot reads (groups, peers, network) are answered from memory on the event
loop; the other reads run on worker threads (peewee is synchronous). Errors are JSON with a
human-readable ``detail``: validation 400, missing or unknown credential 401, not the caller's
to do (or the join policy) 403, unknown id 404,
conflicts (full group, stale term, duplicate id) 409, oversize body 413, database busy 503. An
unexpected error is logged and answered with a JSON 500, but the fuzz test shows none occur.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
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
from litestar.datastructures import MutableScopeHeaders, State
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
from litestar.types import Message, Scope

from bootstrap import ca as ca_files
from bootstrap.access import Access, Caller
from bootstrap.db import is_database_url
from bootstrap.docs import assets_router, render_plugins
from bootstrap.errors import Forbidden, Unauthorized
from bootstrap.expiry import ExpiryThread
from bootstrap.snapshot import Encoded
from bootstrap.store import LivenessConfig, RegistryStore, StoreError
from mycelium_p2p.identity import (
    OBSERVER_DAYS,
    ROLE_OBSERVER,
    CertificateAuthority,
    IdentityError,
    credential_hash,
)
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
    ObserverBody,
    ObserverOut,
    PerformanceBody,
    RegisterBody,
    RegisteredOut,
    RevocationsOut,
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
_READ_ERRORS: list[type[HTTPException]] = [
    ValidationException,
    NotAuthorizedException,
    DatabaseBusyException,
]
_ONE_ERRORS: list[type[HTTPException]] = [*_READ_ERRORS, NotFoundException]
_WRITE_ERRORS: list[type[HTTPException]] = [
    ValidationException,
    NotAuthorizedException,
    ForbiddenException,
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


def _access(state: State) -> Access:
    return state["access"]  # type: ignore[no-any-return]


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every route but ``/health`` and ``/docs``: who is asking (``bootstrap.access``).

    With a token, a missing, unknown or revoked credential is 401. The caller is kept in the
    connection's state for the handler's own check (403 when it is not the caller's to do).
    (Async: Litestar runs a synchronous guard on a worker thread, a thread hop per request.)"""
    state = connection.app.state
    access, store = _access(state), _store(state)
    header = connection.headers.get("authorization")
    try:
        caller = access.caller(header)
    except Unauthorized:
        _, _, given = (header or "").partition(" ")
        if not store.shared or not given.strip():
            raise
        # Enrolled through another registry of this database a moment ago?
        entry = await asyncio.to_thread(store.enrolled_entry, given.strip())
        if entry is None:
            raise
        caller = access.caller(header)
    connection.state.caller = caller


def _caller(request: Request[Any, Any, Any]) -> Caller:
    return request.state.caller  # type: ignore[no-any-return]


_write = {
    "guards": [authenticate],
    "raises": _WRITE_ERRORS,
    "security": [{"bearer": []}],
}
_read = {
    "guards": [authenticate],
    "sync_to_thread": True,
    "raises": _READ_ERRORS,
    "security": [{"bearer": []}],
}
# Snapshot reads are answered from memory on the event loop.
_snapshot = {"guards": [authenticate], "raises": _READ_ERRORS, "security": [{"bearer": []}]}

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
async def register_node(
    request: Request[Any, Any, Any], state: State, data: RegisterBody
) -> RegisteredOut:
    """Register or update a node (idempotent for the same id); it becomes alive.

    With a token: a new id needs the admission token and enrols (the answer's ``credential``
    is the node's from then on); an enrolled id needs its own credential. ``public_key`` (the
    node's CURVE key) is required and comes back bound to the id in ``ticket``; a ``csr`` is
    answered with ``certificate`` and ``ca_certificate``."""
    store, access, caller = _store(state), _access(state), _caller(request)
    if access.open:
        node = await _committed(store.submit(store.writes.register, data))
        return RegisteredOut(**msgspec.structs.asdict(node))
    ca = _ca(state)
    enrols = caller.kind == "admission" and not store.enrolled.known(data.id)
    if not enrols:
        caller.acts_for(data.id)  # who may speak for this id comes before what it sent
    if data.public_key is None:
        raise ValidationException(
            detail="public_key: required with a token (the node's Curve25519 key, Z85)"
        )
    try:
        certificate = ca.issue_certificate(data.csr, data.id).decode() if data.csr else None
    except IdentityError as exc:
        raise ValidationException(detail=f"csr: {exc}") from None
    credential = None
    if enrols:
        credential = secrets.token_urlsafe(32)
        write = store.submit(store.writes.enrol, data, credential_hash(credential))
    else:
        write = store.submit(store.writes.register_enrolled, data)
    node = await _committed(write)
    ticket = ca.issue_ticket(data.id, data.public_key.encode())
    return RegisteredOut(
        **msgspec.structs.asdict(node),
        credential=credential,
        ticket=ticket.text(),
        certificate=certificate,
        ca_certificate=ca.cert_pem.decode() if certificate else None,
    )


def _ca(state: State) -> CertificateAuthority:
    ca = _store(state).ca
    if ca is None:  # a token without a CA cannot be configured (create_app makes one)
        raise NotFoundException(detail="this registry has no token, hence no CA")
    return ca


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
async def heartbeat(
    request: Request[Any, Any, Any], state: State, node_id: PathId, body: bytes
) -> HeartbeatOut:
    """Liveness plus the node's current metrics. Liveness does not depend on the metrics: with
    a refused field the heartbeat is still recorded, with the valid fields, and answered 400.

    Recorded in memory and answered at once; written to the database within a second. The
    answer names a few other live peers, so that nodes find each other without asking."""
    _caller(request).acts_for(node_id)
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
async def remove_node(request: Request[Any, Any, Any], state: State, node_id: PathId) -> NodeOut:
    """Graceful leave: the node leaves its group and is marked gone.

    By the operator (``--admin-token``): the node is removed for good, its id revoked."""
    store, caller = _store(state), _caller(request)
    if caller.kind == "admin":
        node = await _committed(store.submit(store.writes.revoke, node_id, store.sign_revocations))
        if node is None:
            raise NotFoundException(detail=f"node {node_id!r} was forgotten; its id is revoked")
        return node
    caller.acts_for(node_id)
    return await _committed(store.submit(store.writes.remove, node_id))


@post(
    "/nodes/{node_id:str}/revoke",
    status_code=HTTP_200_OK,
    operation_id="revokeNode",
    **_write,
)
async def revoke_node(
    request: Request[Any, Any, Any], state: State, node_id: PathId
) -> RevocationsOut:
    """The operator revokes a node (``--admin-token``): it is removed, and its id joins the
    signed revocation list every node refuses; the answer is that list."""
    store = _store(state)
    _ca(state)
    if _caller(request).kind != "admin":
        raise Forbidden("only the operator token (--admin-token) revokes a node")
    await _committed(store.submit(store.writes.revoke, node_id, store.sign_revocations))
    return store.revocations()


@get(
    "/revocations",
    operation_id="revocations",
    guards=[authenticate],
    raises=[*_ONE_ERRORS, NotAuthorizedException],
    security=[{"bearer": []}],
)
async def revocations(state: State) -> RevocationsOut:
    """The revocation list the CA signed last (serial 0 before any revocation)."""
    _ca(state)
    return _store(state).revocations()


@post("/observers/ticket", status_code=HTTP_200_OK, operation_id="observerTicket", **_write)
async def observer_ticket(state: State, data: ObserverBody) -> ObserverOut:
    """A ticket for an observer's CURVE key (the viewer, ``status --peer``): it gossips as
    ``obs-<hash of its key>`` for a week, receives everything, and owns no group."""
    ca = _ca(state)
    key = data.public_key.encode()
    observer = "obs-" + credential_hash(data.public_key)[:16]
    ticket = ca.issue_ticket(observer, key, role=ROLE_OBSERVER, days=OBSERVER_DAYS)
    return ObserverOut(
        id=observer,
        ticket=ticket.text(),
        not_after=float(ticket.not_after),
        ca_certificate=ca.cert_pem.decode(),
    )


@get("/nodes", operation_id="listNodes", **_read)
def list_nodes(state: State) -> list[NodeOut]:
    """Every node with status (alive / suspect / dead / gone), group and metrics."""
    return _store(state).nodes()


@get(
    "/nodes/{node_id:str}",
    operation_id="getNode",
    guards=[authenticate],
    sync_to_thread=True,
    raises=_ONE_ERRORS,
    security=[{"bearer": []}],
)
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
async def create_group(
    request: Request[Any, Any, Any], state: State, data: CreateGroupBody
) -> GroupOut:
    """Create a group; the founding leader is its first member (term 1). With a token, only
    the leader itself founds it, and the answer carries its lease."""
    _caller(request).acts_for(data.leader)
    store = _store(state)
    write = store.submit(store.writes.create_group, data, store.group_id(data))
    return store.with_lease(await _committed(write))


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
    guards=[authenticate],
    raises=_ONE_ERRORS,
    security=[{"bearer": []}],
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
async def join_group(request: Request[Any, Any, Any], state: State, data: JoinBody) -> GroupOut:
    """Join a group in one transaction (capacity, join policy, model spec; leaves the previous
    group: a migration is one event)."""
    _caller(request).acts_for(data.node_id)
    store = _store(state)
    return await _committed(
        store.submit(store.writes.join, data.node_id, data.group_id, data.reason)
    )


@post("/groups/leave", status_code=HTTP_200_OK, operation_id="leaveGroup", **_write)
async def leave_group(request: Request[Any, Any, Any], state: State, data: LeaveBody) -> NodeOut:
    """The node leaves its group."""
    _caller(request).acts_for(data.node_id)
    store = _store(state)
    return await _committed(store.submit(store.writes.leave, data.node_id))


@put(
    "/groups/{group_id:str}/performance",
    operation_id="reportPerformance",
    guards=[authenticate],
    raises=[*_WRITE_ERRORS],
    security=[{"bearer": []}],
)
async def report_performance(
    request: Request[Any, Any, Any], state: State, group_id: PathId, data: PerformanceBody
) -> GroupOut:
    """The leader of the current term reports round metrics."""
    _caller(request).acts_for(data.node_id)
    store = _store(state)
    return await _committed(store.submit(store.writes.report_performance, group_id, data))


@put(
    "/groups/{group_id:str}/leader",
    operation_id="claimLeader",
    guards=[authenticate],
    raises=[*_WRITE_ERRORS],
    security=[{"bearer": []}],
)
async def claim_leader(
    request: Request[Any, Any, Any], state: State, group_id: PathId, data: LeaderBody
) -> GroupOut:
    """Claim leadership with ``term = current + 1`` (compare-and-set: one claimant wins). With
    a token a member claims for itself only, and the answer carries the lease of its term."""
    _caller(request).acts_for(data.node_id)
    store = _store(state)
    return store.with_lease(
        await _committed(store.submit(store.writes.claim_leader, group_id, data))
    )


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
    *,
    admin_token: str | None = None,
    observer_token: str | None = None,
    ca_dir: str | Path | None = None,
    ca: CertificateAuthority | None = None,
) -> Litestar:
    """Build the registry app.

    Parameters
    ----------
    db_path : str or Path
        SQLite file (created with its schema on first start), or a PostgreSQL URL
        ``postgresql://USER@HOST:PORT/DB`` that several registries may share.
    token : str, optional
        The admission token: with it, every request but ``/health`` and ``/docs`` needs a
        credential (``bootstrap.access``) and the registry is the network's CA
        (default: None, open).
    liveness : LivenessConfig, optional
        Expiry timings (default: ``LivenessConfig()``).
    clock : callable
        Wall-clock seconds (default: ``time.time``).
    rng : random.Random, optional
        Randomness for peer samples and generated group ids (default: a fresh ``Random()``).
    expiry : bool
        Run the background expiry thread (default: True; tests on a fake clock turn it off
        and call ``app.state.store.sweep()`` themselves).
    admin_token, observer_token : str, optional
        The operator's token (removes and revokes any node) and a read-only token for
        viewers; both need ``token`` (default: None).
    ca_dir : str or Path, optional
        The CA's folder (``bootstrap.ca``): default ``<db>.ca`` beside an SQLite file; required
        for PostgreSQL; an in-memory database gets a CA in memory.
    ca : CertificateAuthority, optional
        Use this CA instead of a folder's (tests) (default: None).

    Raises
    ------
    ValueError
        An admin or observer token without ``token``, or PostgreSQL without ``ca_dir``.
    CaError
        If the CA folder cannot be read or made.
    """
    token = token or None
    if (admin_token or observer_token) and not token:
        raise ValueError("--admin-token and --observer-token need --token")
    if token and ca is None:
        ca = _load_ca(db_path, ca_dir)
    store = RegistryStore(
        db_path, liveness=liveness, clock=clock, rng=rng, ca=ca if token else None
    )
    access = Access(token, admin_token, observer_token, store.enrolled)

    def stamp(message: Message, scope: Scope) -> None:
        # Every answer names the newest revocation list: nodes fetch it when it is news. (An
        # app-level hook: route handlers are shared by every app of the process, their own
        # hooks are not.)
        if message["type"] == "http.response.start":
            headers = MutableScopeHeaders.from_message(message)
            headers[REVOCATIONS_HEADER] = str(store.enrolled.crl_serial)

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
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="a node credential, --token (enrols), --admin-token or "
                    "--observer-token",
                )
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
            revoke_node,
            revocations,
            observer_ticket,
            sample_peers,
            network,
            list_events,
            health,
            assets_router(),
        ],
        state=State({"store": store, "access": access}),
        before_send=[stamp] if token else [],
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


def _load_ca(db_path: str | Path, ca_dir: str | Path | None) -> CertificateAuthority:
    if ca_dir is not None:
        return ca_files.load_or_create(ca_dir)
    if str(db_path) == ":memory:":
        return CertificateAuthority.create()
    if is_database_url(db_path):
        raise ValueError(
            "a PostgreSQL registry with --token needs --ca-dir DIR (the same CA folder for "
            "every registry of the database)"
        )
    return ca_files.load_or_create(ca_files.default_dir(db_path))


#: The answer header naming the newest revocation list's serial (with a token).
REVOCATIONS_HEADER = "X-Mycelium-Revocations"

__all__ = ["REVOCATIONS_HEADER", "ExpiryThread", "Id", "LivenessConfig", "create_app"]
