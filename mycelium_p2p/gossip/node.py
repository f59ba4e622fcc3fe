"""``SwimNode``: a ``GossipCore`` run on a ``Transport`` by one background thread.

The node is given its transport (ZeroMQ, memory, or either wrapped, e.g. in a ``Partition``) and
its delegate; it owns both from then on (``stop`` closes the transport). Calls from other threads
are queued to the gossip thread (woken through ``transport.wake()``) and wait for its answer.
``subscribe`` callbacks run on the gossip thread: they must be quick and must not block (hand
work to another thread); they may call this node's methods except ``request_model``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any

from mycelium_p2p.config import GossipConfig
from mycelium_p2p.containment import Containment
from mycelium_p2p.gossip.core import REPLY, GossipCore, GossipEvent, Outbound
from mycelium_p2p.gossip.delegate import Delegate
from mycelium_p2p.gossip.membership import MemberView
from mycelium_p2p.gossip.messages import WireError, check_address, check_id
from mycelium_p2p.gossip.transport import Transport, peer_of
from mycelium_p2p.identity import MAX_TICKET, IdentityError, from_text

#: The member metadata key of a node's ticket (text): how peers learn the key to reach it with.
TICKET_KEY = "ticket"

log = logging.getLogger(__name__)

Command = Callable[[GossipCore, float], Any]


class SwimNode:
    """A gossip node on its own thread (thread-safe facade of a ``GossipCore``).

    Parameters
    ----------
    node_id : str
        This node's id.
    config : GossipConfig
        Gossip settings.
    transport : Transport
        Its network endpoint; its ``address`` is the node's advertised address.
    delegate : Delegate | None
        The application riding on gossip (default: None, none).
    meta : dict | None
        Initial member metadata, a flat map (default: None, empty).
    rng : random.Random | None
        Random source (default: a new ``random.Random()``).
    clock : Callable[[], float]
        Monotonic clock in seconds (default: ``time.monotonic``).
    """

    def __init__(
        self,
        node_id: str,
        config: GossipConfig,
        transport: Transport,
        delegate: Delegate | None = None,
        *,
        meta: dict[str, Any] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = check_id(node_id, "node id")
        self.config = config
        self.transport = transport
        self.address = transport.address
        self._clock = clock
        self._core = GossipCore(
            self.node_id,
            self.address,
            config,
            rng or random.Random(),
            clock(),
            meta=meta,
            delegate=delegate,
        )
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        self._commands: SimpleQueue[tuple[Command, Future[Any]]] = SimpleQueue()
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[GossipEvent], None]] = []
        self._joined = threading.Condition()
        self._failure: str | None = None
        self.containment = Containment(log, f"gossip {node_id}")

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the gossip thread."""
        if self._thread is not None:
            raise RuntimeError("SwimNode already started")
        self._thread = threading.Thread(target=self._run, name=f"gossip-{self.node_id}")
        self._thread.daemon = True
        self._thread.start()

    def join(self, seeds: list[str], timeout: float) -> bool:
        """Push-pull with the first seed that answers; True once one did within ``timeout``."""
        seeds = [s for s in seeds if s and s != self.address]
        if not seeds:
            return False
        deadline = time.monotonic() + timeout
        share = timeout / len(seeds)
        for seed in seeds:
            try:
                check_address(seed, "seed")
            except WireError as exc:
                log.warning("skipping seed: %s", exc)
                continue
            before = self.call(lambda core, now: core.join_responses)
            self.call(lambda core, now, s=seed: self._send(core.join(s, now)))
            end = min(deadline, time.monotonic() + share)
            with self._joined:
                answered = self._joined.wait_for(
                    lambda b=before: self._core.join_responses > b,
                    timeout=max(0.0, end - time.monotonic()),
                )
            if answered:
                return True
        return False

    def leave(self, timeout: float = 1.0) -> None:
        """Announce a graceful leave, let the news go out (bounded by ``timeout``), stop."""
        if self._thread is None or not self._thread.is_alive():
            self.stop()
            return
        self.call(lambda core, now: self._send(core.leave(now)))
        subject = ("m", self.node_id)
        deadline = time.monotonic() + min(timeout, 10 * self.config.gossip_interval)
        while time.monotonic() < deadline:
            sent = self.call(lambda core, now: core.queue.transmits(subject))
            if sent is None or sent >= self.config.fanout:
                break
            self._stopping.wait(self.config.gossip_interval / 2)
        self.stop()

    def stop(self) -> None:
        """Stop the thread and close the transport (idempotent)."""
        self._stopping.set()
        if not self._closed:
            self.transport.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if not self._closed and (self._thread is None or not self._thread.is_alive()):
            self._closed = True
            self.transport.close()

    # ------------------------------------------------------------------ API

    def call(self, fn: Command, timeout: float = 10.0) -> Any:
        """Run ``fn(core, now)`` on the gossip thread (directly if it is not running) and return
        its result; its exception is raised here."""
        thread = self._thread
        if thread is threading.current_thread() or thread is None or not thread.is_alive():
            with self._lock:
                return fn(self._core, self._clock())
        fut: Future[Any] = Future()
        self._commands.put((fn, fut))
        self.transport.wake()
        return fut.result(timeout=timeout)

    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into own metadata, bump incarnation, gossip it (ValueError if bad)."""
        self.call(lambda core, now: core.update_meta(**fields))

    def members(self) -> list[MemberView]:
        """Every known member (self first): id, address, status, incarnation, meta."""
        return self.call(lambda core, now: core.members())

    def subscribe(self, callback: Callable[[GossipEvent], None]) -> None:
        """Call ``callback(event)`` on the gossip thread for every event (keep it quick)."""
        with self._lock:
            self._subscribers.append(callback)

    def stats(self) -> dict[str, Any]:
        """Core counters plus transport counters (``transport`` key)."""

        def snap(core: GossipCore, now: float) -> dict[str, Any]:
            s = core.stats()
            s["transport"] = self.transport.stats() if not self._closed else {}
            return s

        return self.call(snap)

    def request_model(
        self, address: str, group_id: str, timeout: float
    ) -> tuple[int, bytes] | None:
        """Ask ``address`` for its model of ``group_id``; ``(round, payload)`` or None.

        Runs on the calling thread over a connection of its own, which alone accepts frames up
        to ``max_model_bytes`` (never call it from a subscriber callback).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("request_model would block the gossip thread")
        if self._closed:
            return None
        req_id, frame = self.call(lambda core, now: core.request_model(address, group_id, now))
        answer = self.transport.request(address, frame, timeout)
        if answer is None:
            return None
        return self.call(lambda core, now: core.model_answer(req_id, group_id, answer))

    @property
    def running(self) -> bool:
        """True while the gossip thread runs (False before ``start`` and once it ended)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> str | None:
        """Why the gossip thread ended on its own, if it did (None while running or stopped)."""
        return self._failure

    # ------------------------------------------------------------------ the thread

    def _send(self, out: Outbound, reply_to: Any = None) -> None:
        t = self.transport
        for dest, frame in out:
            if dest == REPLY:
                if reply_to is not None:
                    t.reply(reply_to, frame)
            elif dest != self.address:
                t.send(dest, frame)

    def _run(self) -> None:
        core, transport = self._core, self.transport
        unit = self.containment.unit
        try:
            while not self._stopping.is_set():
                now = self._clock()
                wait = min(max(0.0, core.next_due(now) - now), 0.25)
                for token, frame in transport.receive(wait):
                    with unit("handling a frame"):
                        out = core.handle("", frame, self._clock(), peer_of(token))
                        self._learn(core.events)  # an answer may go to a member just learned
                        self._send(out, reply_to=token)
                self._run_commands(core)
                now = self._clock()
                if now >= core.next_due(now):
                    with unit("a timer tick"):
                        self._send(core.tick(now))
                with unit("dispatching events"):
                    self._dispatch(core)
        except BaseException as exc:  # outside any unit: the loop itself broke
            self._failure = f"{type(exc).__name__}: {exc}"
            log.exception("gossip thread of %s crashed", self.node_id)
        finally:
            self._run_commands(core)
            self._stopping.set()

    def _run_commands(self, core: GossipCore) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                with self._lock:
                    fut.set_result(fn(core, self._clock()))
            except Exception as exc:
                fut.set_exception(exc)

    def _learn(self, events: list[GossipEvent]) -> None:
        """Give the transport the tickets (gossip keys) that members' metadata carries."""
        for ev in events:
            if ev.kind in ("member_alive", "member_updated") and ev.member:
                ticket = ev.member.meta.get(TICKET_KEY)
                if isinstance(ticket, str):
                    with contextlib.suppress(IdentityError):
                        raw = from_text(ticket, MAX_TICKET)
                        self.transport.learn(ev.member.id, ev.member.address, raw)

    def _dispatch(self, core: GossipCore) -> None:
        if core.join_responses:
            with self._joined:
                self._joined.notify_all()
        events = core.drain_events()
        if not events:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for ev in events:
            if ev.kind in ("member_dead", "member_left", "member_removed") and ev.member:
                self.transport.forget(ev.member.address)
            for cb in subscribers:
                try:
                    cb(ev)
                except Exception:
                    log.exception("gossip subscriber failed on %s", ev.kind)
