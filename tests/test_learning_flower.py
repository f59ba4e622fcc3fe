"""The Flower glue with real Flower over real gRPC on loopback (port 0 everywhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mycelium_p2p.learning.data import NodeData, load_node_data
from mycelium_p2p.learning.flower import (
    STRATEGIES,
    GroupServer,
    MemberClient,
    RoundResult,
    check_address,
    make_strategy,
    plain_flower_rounds,
)
from mycelium_p2p.learning.models import build_model, get_weights
from tests.helpers import wait_for

SPEC = "mlp:1x8x8:10"


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``pred`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    wait_for(pred, timeout, interval=0.02, what=what)


@pytest.fixture(scope="module")
def datas() -> list[NodeData]:
    return [load_node_data("digits:iid", i, 4, seed=0) for i in range(4)]


def _server(cleanup: list[Any], **kwargs: Any) -> tuple[GroupServer, list[RoundResult]]:
    rounds: list[RoundResult] = []
    server = GroupServer(get_weights(build_model(SPEC, seed=0)), on_round=rounds.append, **kwargs)
    cleanup.append(server)
    server.start()
    return server, rounds


def _member(cleanup: list[Any], data: NodeData, seed: int, **kwargs: Any) -> MemberClient:
    client = MemberClient(data, SPEC, seed=seed, local_epochs=1, **kwargs)
    cleanup.append(client)
    return client


@pytest.mark.slow
def test_group_of_three_learns(datas: list[NodeData], cleanup: list[Any]) -> None:
    server, rounds = _server(cleanup, min_clients=3)
    assert server.address is not None and not server.address.endswith(":0")
    seen: list[int] = []
    members = [
        _member(cleanup, datas[i], i, on_global=lambda _w, r: seen.append(r)) for i in range(3)
    ]
    for member in members:
        member.connect(server.address)
    wait_until(lambda: server.round >= 6, 60, "six rounds")
    first, last = rounds[0], rounds[-1]
    assert [r.round for r in rounds] == list(range(1, len(rounds) + 1))
    assert all(r.clients == 3 for r in rounds)
    assert first.examples == sum(len(d.val) for d in datas[:3])
    assert last.accuracy > first.accuracy and last.accuracy > 0.8
    assert all(m.connected for m in members)
    # members keep the newest global model (a later leader can start from it)
    wait_until(lambda: all(m.last_round >= 5 for m in members), 30, "global models")
    glob = members[0].last_global_weights
    assert glob is not None and [w.shape for w in glob] == [w.shape for w in last.weights]
    assert seen and seen == sorted(seen)
    assert members[0].local_model() is not members[0].local_model()
    started = time.monotonic()
    server.stop()
    assert not server.running
    wait_until(lambda: not any(m.connected for m in members), 10, "clients to notice")
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_member_switches_servers_in_process(datas: list[NodeData], cleanup: list[Any]) -> None:
    first, first_rounds = _server(cleanup)
    second, second_rounds = _server(cleanup)
    members = [_member(cleanup, datas[i], i) for i in range(3)]
    for member in members:
        member.connect(first.address)  # type: ignore[arg-type]
    wait_until(lambda: first.num_clients() == 3 and first.round >= 2, 60, "group of three")
    mover = members[0]
    mover.switch(second.address)  # type: ignore[arg-type]
    assert mover.address == second.address
    wait_until(lambda: second.round >= 2, 30, "the second group's rounds")
    assert all(r.clients == 1 for r in second_rounds)
    assert first.num_clients() == 2
    # a round of the first group that started after the move completes without it
    after = first.round + 1
    wait_until(lambda: first.round > after, 30, "the first group's next round")
    done = next(r for r in first_rounds if r.round == after + 1)
    assert done.clients == 2 and done.failures == 0
    mover.disconnect()
    wait_until(lambda: second.num_clients() == 0 and not mover.connected, 10, "disconnect")
    mover.connect(first.address)  # type: ignore[arg-type]
    wait_until(lambda: first.num_clients() == 3, 10, "rejoin")


class StockClient:
    """Built in the test from Flower's public API only (no project code)."""

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        from flwr.client import NumPyClient

        outer = self
        self.fits = 0

        class _Client(NumPyClient):
            def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
                return [np.zeros(s, np.float32) for s in shapes]

            def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                outer.fits += 1
                return [p + 0.001 for p in parameters], 10, {}

            def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                return 0.5, 10, {"accuracy": 0.25}

        self.client = _Client()

    def run(self, address: str) -> threading.Thread:
        from flwr.client import start_client

        thread = threading.Thread(
            target=start_client,
            kwargs={"server_address": address, "client": self.client.to_client(), "insecure": True},
            daemon=True,
        )
        thread.start()
        return thread


@pytest.mark.slow
def test_stock_flower_client_takes_part(cleanup: list[Any]) -> None:
    server, rounds = _server(cleanup)
    shapes = [w.shape for w in server.latest_weights()]
    stock = StockClient(shapes)
    thread = stock.run(server.address)  # type: ignore[arg-type]
    wait_until(lambda: len(rounds) >= 2, 30, "rounds with the stock client")
    assert stock.fits >= 2
    assert rounds[0].clients == 1 and rounds[0].examples == 10
    assert rounds[0].accuracy == pytest.approx(0.25)
    expected = get_weights(build_model(SPEC, seed=0))
    assert np.allclose(rounds[0].weights[0], expected[0] + 0.001)
    server.stop()
    thread.join(5)
    assert not thread.is_alive()  # the server's disconnect ends a stock client cleanly


def _moving_member(
    cleanup: list[Any], data: NodeData, start_round: int
) -> tuple[GroupServer, GroupServer, MemberClient]:
    """Two groups' servers, the old one counting from ``start_round``, and a member that has
    trained a round in the old one."""
    old, _ = _server(cleanup, start_round=start_round)
    new, _ = _server(cleanup)
    member = _member(cleanup, data, 0)
    member.connect(old.address)  # type: ignore[arg-type]
    wait_until(lambda: member.last_round > start_round, 30, "a round of the old group")
    return old, new, member


def test_a_member_that_moves_takes_its_new_groups_model_whatever_the_round_numbers(
    datas: list[NodeData], cleanup: list[Any]
) -> None:
    # Each group counts its own rounds: a member coming from a group at round 50 must take the
    # model of a group at round 1 (it used to keep the old group's until round 51).
    old, new, member = _moving_member(cleanup, datas[0], 50)
    assert member.model_source == old.address
    member.switch(new.address)  # type: ignore[arg-type]
    # Until the new group's first model, it holds the old group's, and says whose it is (a
    # member that claims a group it just joined must not restart it from another's model).
    assert member.model_source == old.address
    wait_until(lambda: 0 < member.last_round < 50, 30, "the new group's model")
    assert member.model_source == new.address
    since = member.last_round
    held = member.last_global_weights  # of round `since` or a later one of the new group
    assert held is not None
    wait_until(lambda: new.round >= since + 2, 30, "two more rounds")  # results are kept late
    later = [r.weights for r in new.results if r.round >= since]
    assert any(all(np.array_equal(a, b) for a, b in zip(held, w, strict=True)) for w in later)


def test_a_joining_member_holds_its_probed_model_until_its_new_groups_first_round(
    datas: list[NodeData], cleanup: list[Any]
) -> None:
    # A member that joins holds its new group's model as its probe fetched it, as that group's:
    # before, it held the model of the group it left until the new group's first round.
    old, new, member = _moving_member(cleanup, datas[0], 5)
    old.stop()
    probed = [w + 0.25 for w in new.latest_weights()]
    member.adopt(probed, new.address, 3)  # type: ignore[arg-type]
    assert member.model_source == new.address and member.last_round == 3
    held = member.last_global_weights
    assert held is not None and all(np.array_equal(a, b) for a, b in zip(held, probed, strict=True))
    member.adopt(new.latest_weights(), new.address, 2)  # type: ignore[arg-type]
    held = member.last_global_weights  # an older one of the same server is kept out
    assert held is not None and all(np.array_equal(a, b) for a, b in zip(held, probed, strict=True))
    # The group's first round with it replaces the probed model.
    member.switch(new.address)  # type: ignore[arg-type]
    wait_until(lambda: new.round >= 2 and member.last_round >= 1, 30, "the new group's rounds")
    held = member.last_global_weights
    assert held is not None and not np.array_equal(held[0], probed[0])
    assert member.model_source == new.address


def test_a_whole_model_blended_in_is_the_groups_model_at_once(cleanup: list[Any]) -> None:
    # A group founded from another group's model: probes and the node's own figures see that
    # model before the first round, not the founder's own model it was started with.
    server, _ = _server(cleanup)
    own = server.latest_weights()
    peer = [np.full_like(w, 0.5) for w in own]
    server.blend([(peer, 0.25)])  # a part: mixed in when the next round starts
    assert all(np.array_equal(a, b) for a, b in zip(server.latest_weights(), own, strict=True))
    server.blend([(peer, 1.0)])
    assert all(np.allclose(w, 0.5) for w in server.latest_weights())


@pytest.mark.slow
def test_blended_models_are_mixed_into_the_next_round(cleanup: list[Any]) -> None:
    server, rounds = _server(cleanup)
    own = server.latest_weights()
    peer = [np.full_like(w, 0.5) for w in own]
    refused = [
        ([w[:1] for w in own], 0.25),  # another shape
        ([np.full_like(w, np.nan) for w in own], 0.25),
        ([w * 1e6 for w in own], 0.25),  # far beyond the group's own norm
        (peer, 1.5),  # more than the whole model
    ]
    for bad in refused:
        with pytest.raises(ValueError):
            server.blend([bad])
    with pytest.raises(ValueError):
        server.blend([(peer, 0.6), (peer, 0.6)])
    server.blend([(peer, 0.25)])
    stock = StockClient([w.shape for w in own])
    stock.run(server.address)  # type: ignore[arg-type]
    wait_until(lambda: len(rounds) >= 2, 30, "rounds with the stock client")
    # Round 1 started from 3/4 of its own model and 1/4 of the peer's (then the client's +0.001);
    # round 2 from round 1's: one blend, once, and none of the refused ones.
    assert server.blended == 1
    assert np.allclose(rounds[0].weights[0], 0.75 * own[0] + 0.25 * 0.5 + 0.001, atol=1e-6)
    assert np.allclose(rounds[1].weights[0], rounds[0].weights[0] + 0.001, atol=1e-6)
    # A group founded from another group's model starts from all of it, nothing of its own.
    server.blend([(peer, 1.0)])
    since = len(rounds)
    wait_until(lambda: len(rounds) >= since + 2, 30, "rounds after the whole model was blended")
    assert any(np.allclose(r.weights[0], 0.5 + 0.001, atol=1e-6) for r in rounds[since:])


def test_a_held_member_votes_for_the_groups_model_as_it_is(
    datas: list[NodeData], cleanup: list[Any]
) -> None:
    """A node whose data changed holds its training until it has chosen a group again."""
    server, rounds = _server(cleanup)
    start = server.latest_weights()
    member = _member(cleanup, datas[0], 0)
    member.hold = True
    member.connect(server.address)  # type: ignore[arg-type]
    wait_until(lambda: len(rounds) >= 2, 30, "two held rounds")
    assert member.fits == 0
    assert all(np.array_equal(a, b) for a, b in zip(rounds[1].weights, start, strict=True))
    member.hold = False
    held = len(rounds)
    wait_until(lambda: len(rounds) >= held + 2, 30, "two rounds after the hold")
    assert member.fits >= 1
    assert not np.array_equal(rounds[-1].weights[0], start[0])


class _Vanishing:
    """A stock NumPyClient whose process "dies" in the middle of a fit."""

    def __init__(self) -> None:
        from flwr.client import NumPyClient

        class _Client(NumPyClient):
            def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                raise RuntimeError("crashed mid-round")

            def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                return 1.0, 1, {}

        self.client = _Client()


@pytest.mark.slow
def test_client_vanishing_mid_round_does_not_stall(
    datas: list[NodeData], cleanup: list[Any]
) -> None:
    from flwr.client import start_client

    server, rounds = _server(cleanup, min_clients=3, round_timeout=120)
    for i in range(2):
        _member(cleanup, datas[i], i).connect(server.address)  # type: ignore[arg-type]
    crashed: list[BaseException] = []

    def run_vanishing() -> None:
        try:
            start_client(
                server_address=server.address, client=_Vanishing().client.to_client(), insecure=True
            )
        except BaseException as exc:  # the stock client re-raises its crash
            crashed.append(exc)

    threading.Thread(target=run_vanishing, daemon=True).start()
    wait_until(lambda: crashed, 60, "the client to crash")
    # the round it crashed in completes with the other two, far below the 120 s round timeout
    wait_until(lambda: rounds and rounds[0].failures == 1, 60, "the round to complete")
    assert rounds[0].clients == 2
    assert server.num_clients() == 2


class _Poisoner:
    def __init__(self, mode: str) -> None:
        from flwr.client import NumPyClient

        class _Client(NumPyClient):
            def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                if mode == "nan":
                    bad = [np.full_like(p, np.nan) for p in parameters]
                else:
                    bad = [p * 1e4 for p in parameters]
                return bad, 10_000, {}  # claims many examples to dominate FedAvg

            def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                return 0.0, 1, {"accuracy": 1.0}

        self.client = _Client()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["nan", "huge"])
def test_poisoned_update_is_dropped(mode: str, datas: list[NodeData], cleanup: list[Any]) -> None:
    from flwr.client import start_client

    server, rounds = _server(cleanup, min_clients=3)
    for i in range(2):
        _member(cleanup, datas[i], i).connect(server.address)  # type: ignore[arg-type]
    threading.Thread(
        target=start_client,
        kwargs={
            "server_address": server.address,
            "client": _Poisoner(mode).client.to_client(),
            "insecure": True,
        },
        daemon=True,
    ).start()
    wait_until(lambda: len(rounds) >= 3, 60, "three rounds")
    assert all(r.rejected == 1 and r.clients == 3 for r in rounds[:3])
    assert len(server.rejected) >= 3
    weights = server.latest_weights()
    assert all(np.isfinite(w).all() for w in weights)
    norm = np.sqrt(sum(float(np.square(w).sum()) for w in weights))
    ref = np.sqrt(sum(float(np.square(w).sum()) for w in get_weights(build_model(SPEC, seed=0))))
    assert norm < 3 * ref


@pytest.mark.slow
@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_runs_rounds(name: str, datas: list[NodeData], cleanup: list[Any]) -> None:
    server, rounds = _server(cleanup, strategy=name, min_clients=3)
    for i in range(3):
        _member(cleanup, datas[i], i).connect(server.address)  # type: ignore[arg-type]
    wait_until(lambda: len(rounds) >= 2, 60, f"two {name} rounds")
    assert all(np.isfinite(w).all() for w in server.latest_weights())
    assert rounds[-1].accuracy > 0.2  # learning, not chance (0.1)


def test_unknown_strategy_and_bad_addresses() -> None:
    weights = get_weights(build_model(SPEC, seed=0))
    with pytest.raises(ValueError, match="fedavg"):
        make_strategy("fedsomething", weights)
    with pytest.raises(ValueError, match="unknown strategy"):
        GroupServer(weights, strategy="nope")
    for bad in ("localhost", "host:", ":80", "h:99999", "h:abc"):
        with pytest.raises(ValueError):
            check_address(bad)
    client = MemberClient(load_node_data("digits", 0, 4), SPEC)
    with pytest.raises(ValueError):
        client.connect("nowhere")
    client.close()


def test_port_in_use_is_an_error_not_an_exit() -> None:
    weights = get_weights(build_model(SPEC, seed=0))
    first = GroupServer(weights)
    address = first.start()
    second = GroupServer(weights, port=int(address.rpartition(":")[2]))
    try:
        with pytest.raises(OSError, match="in use"):
            second.start()
    finally:
        second.stop()
        first.stop()


@pytest.mark.slow
def test_restart_from_round_and_weights(datas: list[NodeData], cleanup: list[Any]) -> None:
    """A new leader continues the numbering from the last global model it holds."""
    first, _ = _server(cleanup)
    member = _member(cleanup, datas[0], 0)
    member.connect(first.address)  # type: ignore[arg-type]
    wait_until(lambda: member.last_round >= 3, 60, "three rounds")
    first.stop()
    held, held_round = member.last_global_weights, member.last_round
    assert held is not None
    second = GroupServer(held, start_round=held_round)
    cleanup.append(second)
    assert second.round == held_round
    assert all(np.array_equal(a, b) for a, b in zip(second.latest_weights(), held, strict=True))
    second.set_round(held_round + 10)
    member.switch(second.start())
    wait_until(lambda: second.round >= held_round + 11, 30, "rounds on the new leader")
    assert member.last_round >= held_round + 10


@pytest.mark.slow
def test_member_reconnects_after_server_restart(datas: list[NodeData], cleanup: list[Any]) -> None:
    first, _ = _server(cleanup)
    member = _member(cleanup, datas[0], 0)
    member.connect(first.address)  # type: ignore[arg-type]
    wait_until(lambda: first.round >= 1, 30, "a round")
    first.stop()
    wait_until(lambda: not member.connected, 10, "the loss to be noticed")
    port = int(first.address.rpartition(":")[2])  # type: ignore[union-attr]
    again = GroupServer(first.latest_weights(), port=port)
    cleanup.append(again)
    try:
        again.start()
    except OSError:
        pytest.skip("the OS gave the port away meanwhile")
    wait_until(lambda: again.round >= 1, 30, "a round after the restart")
    assert member.sessions >= 2


@pytest.mark.slow
def test_plain_flower_rounds(datas: list[NodeData]) -> None:
    times = plain_flower_rounds(datas[:3], SPEC, rounds=3, local_epochs=1)
    assert len(times) == 3 and all(t > 0 for t in times)


class _StuckOnce(MemberClient):
    """A member whose first fit outlasts the round timeout (a straggler)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
        return super().fit(parameters, config)


@pytest.mark.slow
def test_straggler_is_cut_off_and_reconnects(datas: list[NodeData], cleanup: list[Any]) -> None:
    server, rounds = _server(cleanup, round_timeout=3.0)  # a loaded machine still fits in time
    member = _StuckOnce(datas[0], SPEC, seed=0, local_epochs=1)
    cleanup.append(member)
    member.connect(server.address)  # type: ignore[arg-type]
    wait_until(member.entered.is_set, 30, "the first fit")
    wait_until(lambda: server.num_clients() == 0, 30, "the server to cut the straggler off")
    assert not rounds  # a round where nobody answered in time is not a round
    member.release.set()
    wait_until(lambda: len(rounds) >= 1, 30, "a round after reconnecting")
    assert member.sessions >= 2 and rounds[0].clients == 1 and rounds[0].round == 1
