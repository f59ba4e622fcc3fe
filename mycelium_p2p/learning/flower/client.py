"""A member's Flower client: connect, switch and disconnect at run time, in-process.

`MemberClient` is a ``NumPyClient`` over one node's task (``task.GuardedTask``) that stays
connected to a wanted server address, reconnects after a round timeout or a lost server, and can
``switch`` servers without a new process. It reports what a leader admits (``admission``): its
node id, the task's training loss and its score as ``accuracy``, with example counts held to the
sizes the node announces.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

import numpy as np
from flwr.common import Scalar
from flwr.compat.client import app as _client_app
from flwr.compat.client.numpy_client import NumPyClient

from mycelium_p2p.learning.builtin import ModelTask
from mycelium_p2p.learning.data import NodeData
from mycelium_p2p.learning.flower import calls
from mycelium_p2p.learning.flower.channels import MutualTls, check_address, wait_for_server
from mycelium_p2p.learning.flower.setup import install
from mycelium_p2p.learning.models import message_limit
from mycelium_p2p.learning.task import GuardedTask, Task
from mycelium_p2p.learning.tls import TlsMaterial

log = logging.getLogger("mycelium_p2p.learning.flower")


class MemberClient(NumPyClient):
    """A member's Flower client over its task; connect, switch and disconnect at run time.

    Parameters
    ----------
    task : Task or NodeData
        What the node learns: ``fit`` trains, ``evaluate`` scores on the validation split. A
        `NodeData` with ``spec`` (``models.model_spec``) makes the built-in `ModelTask` with
        ``local_epochs``, ``batch_size`` and ``lr`` (defaults: 2, 32, 3e-3).
    spec : str or None
        The built-in model spec, only with a `NodeData` (default: None).
    seed : int
        Seed of the task's randomness, advanced per round (default: 0).
    on_global : callable or None
        Called with ``(weights, round)`` whenever a newer global model arrives (default: None).
    connect_timeout : float
        Seconds to wait for a server to listen before retrying (default: 2).
    tls : TlsMaterial or None
        Connect over TLS, verifying the server against ``tls.ca_cert`` (`TlsMaterial.for_member`),
        or in the clear (default: None). A server whose certificate does not verify is never
        joined: the client keeps retrying with back-off.
    node_id : str or None
        Stated as ``node_id`` in every fit and evaluate result, for a leader that checks who
        speaks (`GroupServer`'s ``member_limits``) (default: None, not stated).
    server_name : callable or None
        With mutual TLS (`TlsMaterial.for_node`): ``server_name(address)``, the DNS name the
        certificate of the server at ``address`` must carry (the leader of record's), or None
        while none is known (the client then waits and retries) (default: None).

    While ``hold`` is set, a fit trains nothing and returns the model it received (the node's
    data changed and it has not chosen a group for it yet: its updates would pull the group's
    model toward other data).

    The channel refuses messages larger than `models.message_limit` of the model. A failure of
    the task (``task.TaskError``) fails that round's fit or evaluate; the guarded task's
    ``on_error`` tells the node.
    """

    def __init__(
        self,
        task: Task | GuardedTask | NodeData,
        spec: str | None = None,
        *,
        local_epochs: int = 2,
        batch_size: int = 32,
        lr: float = 3e-3,
        seed: int = 0,
        on_global: Callable[[list[np.ndarray], int], None] | None = None,
        connect_timeout: float = 2.0,
        tls: TlsMaterial | None = None,
        node_id: str | None = None,
        server_name: Callable[[str], str | None] | None = None,
    ) -> None:
        install()
        if isinstance(task, NodeData):
            if spec is None:
                raise ValueError("a MemberClient over NodeData needs the model spec")
            task = ModelTask(
                task, spec, local_epochs=local_epochs, batch_size=batch_size, lr=lr, seed=seed
            )
        self.task = task if isinstance(task, GuardedTask) else GuardedTask(task)
        self.node_id = node_id
        self.tls = tls
        self.server_name = server_name
        self.spec = self.task.spec.key
        self.seed = seed
        self.on_global = on_global
        self.connect_timeout = connect_timeout
        self._parameters = self.task.initial_parameters()  # the last it trained
        self.max_message_length = message_limit(self._parameters)
        self._state = threading.Condition()
        self._target: str | None = None
        self._closed = False
        self._connected = False
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._last_global: list[np.ndarray] | None = None
        self._last_round = 0
        self._session: str | None = None  # the server of the current (or last) session
        self._global_from: str | None = None  # the server `_last_global` came from
        self.hold = False
        self.fits = 0
        self.sessions = 0

    # -- NumPyClient ------------------------------------------------------------------------

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        with self._state:
            return [p.copy() for p in self._parameters]

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        server_round = int(config.get("server_round", 0))
        self._received(parameters, server_round - 1)
        if self.hold:  # a vote for the group's model as it is
            return [p.copy() for p in parameters], self.task.sizes().train, self._identity()
        fitted = self.task.fit(parameters, {**config, "seed": self.seed * 100_003 + server_round})
        with self._state:
            self._parameters = [p.copy() for p in fitted.parameters]
        self.fits += 1
        examples = _announced(fitted.examples, self.task.sizes().train)
        metrics: dict[str, Scalar] = {}
        if math.isfinite(fitted.loss) and fitted.loss >= 0:
            metrics["loss"] = fitted.loss
        return fitted.parameters, examples, {**metrics, **self._identity()}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        self._received(parameters, int(config.get("server_round", 0)))
        scored = self.task.evaluate(parameters, "val")
        examples = _announced(scored.examples, self.task.sizes().val)
        metrics = {"accuracy": scored.accuracy, **self._identity()}
        return scored.loss, examples, metrics

    def _identity(self) -> dict[str, Scalar]:
        return {} if self.node_id is None else {"node_id": self.node_id}

    def _received(self, parameters: list[np.ndarray], server_round: int) -> None:
        with self._state:
            if self._session != self._target or server_round < self._last_round:
                return  # from a server being left, or older than the model held
            self._last_global = [np.array(p, copy=True) for p in parameters]
            self._last_round = server_round
            self._global_from = self._session
            weights = [w.copy() for w in self._last_global]
        if self.on_global is not None:
            try:
                self.on_global(weights, server_round)
            except Exception:
                log.exception("on_global callback failed")

    def adopt(self, weights: list[np.ndarray], source: str, server_round: int) -> None:
        """Hold ``weights`` as the last global model, from the server at ``source`` and of its
        ``server_round`` (a group's model fetched before joining it: a member holds its new
        group's model before the group's first round reaches it). Kept out when a model of
        that server at that round or later is already held."""
        with self._state:
            if self._global_from == source and self._last_round >= server_round:
                return
            self._last_global = [np.array(w, copy=True) for w in weights]
            self._last_round = server_round
            self._global_from = source

    # -- state for the daemon ---------------------------------------------------------------

    @property
    def last_global_weights(self) -> list[np.ndarray] | None:
        """The newest global model received (a copy), or None before the first one."""
        with self._state:
            return None if self._last_global is None else [w.copy() for w in self._last_global]

    @property
    def model_source(self) -> str | None:
        """Address of the server `last_global_weights` came from (None before the first)."""
        with self._state:
            return self._global_from

    @property
    def last_round(self) -> int:
        """Round of `last_global_weights` (0 before any)."""
        with self._state:
            return self._last_round

    @property
    def connected(self) -> bool:
        """True while a session with the wanted server is open."""
        with self._state:
            return self._connected

    @property
    def address(self) -> str | None:
        """The server address this client wants to be connected to."""
        with self._state:
            return self._target

    @property
    def running(self) -> bool:
        """True while the connection thread runs (it does from the first `connect` to `close`)."""
        return self._thread is not None and self._thread.is_alive()

    def local_model(self) -> list[np.ndarray]:
        """A copy of the parameters this client trained last (its task's initial ones before)."""
        return self.get_parameters({})

    # -- connection -------------------------------------------------------------------------

    def connect(self, address: str) -> None:
        """Connect to the server at ``address`` and stay connected until told otherwise."""
        check_address(address)
        with self._state:
            if self._closed:
                raise RuntimeError("MemberClient is closed")
            previous, self._target = self._target, address
            self._state.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="flower-member", daemon=True)
                self._thread.start()
        if previous is not None and previous != address:
            calls.cancel_thread_call(self._thread_id)

    def switch(self, address: str) -> None:
        """Leave the current server at once and join the one at ``address``."""
        self.connect(address)

    def disconnect(self) -> None:
        """Leave the current server (the client can `connect` again later)."""
        with self._state:
            self._target = None
            self._state.notify_all()
        calls.cancel_thread_call(self._thread_id)

    def close(self, timeout: float = 2.0) -> None:
        """Disconnect for good and end the connection thread."""
        with self._state:
            self._closed = True
        self.disconnect()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        calls.register_member_thread(self._thread_id, True)
        try:
            self._sessions()
        finally:
            calls.register_member_thread(self._thread_id, False)

    def _sessions(self) -> None:
        backoff = 0.1
        while True:
            with self._state:
                while self._target is None and not self._closed:
                    self._state.wait()
                if self._closed:
                    return
                address = self._target
            assert address is not None
            calls.forget_thread_call(self._thread_id)
            tls = self.tls
            root = None if tls is None else tls.ca_cert
            mutual = self._mutual(tls, address)
            if tls is not None and tls.mutual and mutual is None:
                self._pause(backoff)  # the leader of record is not known yet
                backoff = min(backoff * 2, 2.0)
                continue
            calls.set_thread_tls(threading.get_ident(), mutual)
            if not wait_for_server(
                address, self.connect_timeout, lambda a=address: self._gone(a), root, mutual
            ):
                self._pause(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            with self._state:
                if self._target != address:
                    continue
                self._connected = True
                if address != self._session:
                    # Round numbers count one group's rounds: another group's round 40 is no
                    # older than the 90th of the group left (its models were ignored until
                    # its count passed the old one).
                    self._last_round = 0
                self._session = address
            self.sessions += 1
            try:
                _client_app.start_client_internal(
                    server_address=address,
                    node_config={},
                    client=self.to_client(),
                    insecure=root is None,
                    root_certificates=root,
                    transport="grpc-bidi",
                    grpc_max_message_length=self.max_message_length,
                )
                backoff = 0.1  # a clean disconnect by the server
            except (Exception, SystemExit) as exc:
                log.debug("session with %s ended: %s", address, exc)
            finally:
                calls.forget_thread_call(self._thread_id)
                with self._state:
                    self._connected = False
            if self._gone(address):  # switched or disconnected: no back-off
                backoff = 0.1
                continue
            self._pause(backoff)
            backoff = min(backoff * 2, 2.0)

    def _mutual(self, tls: TlsMaterial | None, address: str) -> MutualTls | None:
        """The mutual-TLS material for the server at ``address`` (None: not mutual, or no
        leader of record known for it)."""
        if tls is None or not tls.mutual or self.server_name is None:
            return None
        key, cert = tls.client_pair()
        name = self.server_name(address)
        if key is None or cert is None or not name:
            return None
        return MutualTls(tls.ca_cert, key, cert, name)

    def _gone(self, address: str) -> bool:
        with self._state:
            return self._closed or self._target != address

    def _pause(self, seconds: float) -> None:
        # Returns early when the target changes or the client closes.
        with self._state:
            target = self._target
            self._state.wait_for(lambda: self._closed or self._target != target, timeout=seconds)


def _announced(examples: int, announced: int) -> int:
    """A count held to the announced size (a leader refuses more; a client that learns its
    sizes as it goes may report more than it announced so far)."""
    return min(examples, announced) if announced > 0 else examples
