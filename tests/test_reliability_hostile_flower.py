"""A hostile member of a Flower session against a real leader (real gRPC, real Flower).

The attacker may hold the network secret and run modified code: it lies about its evaluation,
its example counts, or sends updates hundreds of megabytes large.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mycelium_p2p.learning.admission import (
    MAX_UNANNOUNCED_EXAMPLES,
    MemberLimits,
    Refusal,
    Sessions,
    announcement,
    check_evaluate,
    check_fit,
    limits_in_view,
)
from mycelium_p2p.learning.data import NodeData, load_node_data
from mycelium_p2p.learning.flower import GroupServer, MemberClient, RoundResult
from mycelium_p2p.learning.models import build_model, get_weights, message_limit
from tests.helpers import wait_for

SPEC = "mlp:1x8x8:10"
BIG = 10**9


@pytest.fixture(scope="module")
def datas() -> list[NodeData]:
    return [load_node_data("digits:iid", i, 4, seed=0) for i in range(4)]


class _Liar(MemberClient):
    """Evaluates honestly, then reports accuracy 1.0 on 10^9 examples."""

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        loss, _, metrics = super().evaluate(parameters, config)
        return loss, BIG, {**metrics, "accuracy": 1.0}


class _Inflater(MemberClient):
    """Trains and evaluates honestly, then claims 10^9 examples for both."""

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        weights, _, metrics = super().fit(parameters, config)
        return weights, BIG, metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        loss, _, metrics = super().evaluate(parameters, config)
        return loss, BIG, metrics


def _group(
    cleanup: list[Any],
    datas: list[NodeData],
    attacker: type[MemberClient],
    attacker_id: str | None = "mallory",
    **server: Any,
) -> tuple[GroupServer, list[RoundResult], list[MemberClient], MemberClient]:
    """A leader, two honest members ("alice", "bob") and an attacker, all members of the group.

    ``member_limits`` answers as a node does from its gossip view: the three members with the
    sizes they announced (the attacker announced its true sizes too).
    """
    names = ["alice", "bob", "mallory"]
    announced = {
        name: MemberLimits(train=len(d.train), val=len(d.val))
        for name, d in zip(names, datas, strict=False)
    }
    rounds: list[RoundResult] = []
    group = GroupServer(
        get_weights(build_model(SPEC, seed=0)),
        on_round=rounds.append,
        member_limits=announced.get,
        **{"min_clients": 3, **server},
    )
    cleanup.append(group)
    address = group.start()
    honest = [
        MemberClient(datas[i], SPEC, seed=i, local_epochs=1, node_id=names[i]) for i in range(2)
    ]
    bad = attacker(datas[2], SPEC, seed=2, local_epochs=1, node_id=attacker_id)
    for client in [*honest, bad]:
        cleanup.append(client)
        client.connect(address)
    return group, rounds, honest, bad


@pytest.mark.slow
def test_accuracy_one_on_a_billion_examples_is_refused(
    datas: list[NodeData], cleanup: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    _, rounds, _, _ = _group(cleanup, datas, _Liar)
    wait_for(lambda: len(rounds) >= 3, 60, what="three rounds")
    print("accuracy, examples:", [(r.round, round(r.accuracy, 3), r.examples) for r in rounds[:3]])
    honest_val = sum(len(d.val) for d in datas[:2])
    for r in rounds[:3]:
        assert r.accuracy < 0.999 and r.examples == honest_val
        assert r.rejected_evaluations == 1
    assert "refused evaluate result of mallory" in caplog.text
    assert f"outside [1, {len(datas[2].val)}] (its announced validation size)" in caplog.text


@pytest.mark.slow
def test_a_billion_examples_are_refused(
    datas: list[NodeData], cleanup: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    group, rounds, _, _ = _group(cleanup, datas, _Inflater, strategy="fedavg")
    wait_for(lambda: len(rounds) >= 3, 60, what="three rounds")
    print(
        "examples, clients, rejected:",
        [(r.round, r.examples, r.clients, r.rejected) for r in rounds[:3]],
    )
    honest_val = sum(len(d.val) for d in datas[:2])
    for r in rounds[:3]:
        assert r.examples == honest_val
        assert r.rejected == 1  # the attacker's fit result is left out of FedAvg
    assert any(f"[1, {len(datas[2].train)}]" in why for _, why in group.rejected)
    assert "refused fit result of mallory" in caplog.text


@pytest.mark.slow
def test_refused_three_rounds_running_is_dropped_and_honest_members_train_on(
    datas: list[NodeData], cleanup: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    group, rounds, honest, bad = _group(cleanup, datas, _Liar, min_clients=2)
    # Dropped after round 3; its reconnection states the same id and is dropped at once.
    wait_for(lambda: len(group.dropped) >= 2 and len(rounds) >= 6, 60, what="the drops")
    print("drops:", list(group.dropped), "attacker sessions:", bad.sessions)
    first = group.dropped[0]
    assert first[:2] == (3, "mallory") and "3 rounds in a row" in first[2]
    assert all(node_id == "mallory" for _, node_id, _ in group.dropped)
    assert "cool-down" in group.dropped[1][2] and bad.sessions >= 2
    # The honest members were in every round: both fits kept, the attacker's evaluation never.
    honest_val = sum(len(d.val) for d in datas[:2])
    for r in rounds:
        assert r.clients - r.rejected >= 2 and r.examples == honest_val
    # (A member a loaded machine made straggle may be reconnecting right now; it was never
    # dropped, and it is connected again within the deadline.)
    done = len(rounds)
    wait_for(
        lambda: all(m.fits >= done and m.connected for m in honest), 30, what="honest members on"
    )
    assert "dropped mallory" in caplog.text


class _Impostor(MemberClient):
    """Honest numbers, but the id it states is nobody in the group."""


@pytest.mark.slow
@pytest.mark.parametrize("stated", ["nobody", None])
def test_a_result_not_from_a_member_is_refused(
    stated: str | None,
    datas: list[NodeData],
    cleanup: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    group, rounds, _, _ = _group(cleanup, datas, _Impostor, attacker_id=stated)
    wait_for(lambda: len(rounds) >= 4, 60, what="four rounds")
    honest_val = sum(len(d.val) for d in datas[:2])
    for r in rounds:
        assert r.rejected == 1 and r.rejected_evaluations == 1 and r.examples == honest_val
    expected = "not a live member" if stated else "no valid node_id"
    assert expected in caplog.text
    # Gossip may lag behind a new member's first session: an unknown id is no strike.
    assert [d for d in group.dropped if d[1] == "nobody"] == []


# --- the node's wiring: announced sizes in gossip, limits from the gossip view ---------------


@pytest.mark.slow
def test_nodes_announce_their_sizes_and_a_lying_node_is_held_to_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real nodes (registry, gossip, Flower): the member lies with its own, real client."""
    from bootstrap.server import cluster_registry
    from mycelium_p2p.gossip.messages import check_meta
    from mycelium_p2p.lifecycle import Phase
    from mycelium_p2p.node_config import NodeConfig
    from mycelium_p2p.testing.local_cluster import LocalCluster

    caplog.set_level(logging.WARNING)
    config = NodeConfig.test().replace(group_capacity=2, round_pause=0.0)
    nodes_data = [load_node_data("digits:iid", i, 2, seed=0) for i in range(2)]
    with LocalCluster(nodes_data, config, registry=cluster_registry) as cluster:
        leader = wait_for(
            lambda: (
                next((n for n in cluster.nodes if n.phase is Phase.LEADER), None)
                if all(n.group_id for n in cluster.nodes) and len(cluster.groups()) == 1
                else None
            ),
            60,
            what="one group of two with a leader",
        )
        member = next(n for n in cluster.nodes if n is not leader)
        for node in cluster.nodes:
            check_meta(node.controller.meta().to_map(), config.gossip.max_meta_bytes)  # fits
        wait_for(
            lambda: leader.member_limits(member.id) is not None, 30, what="the member's limits"
        )
        assert leader.member_limits(member.id) == MemberLimits(
            len(member.data.train), len(member.data.val)
        )
        assert leader.member_limits("nobody") is None
        # The member's client now claims 10^9 validation examples at accuracy 1.0.
        client = member.learning.client
        honest_evaluate = client.evaluate

        def lie(parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            loss, _, metrics = honest_evaluate(parameters, config)
            return loss, BIG, {**metrics, "accuracy": 1.0}

        client.evaluate = lie  # type: ignore[method-assign]
        server = leader.learning.server
        assert server is not None
        start = server.round
        wait_for(lambda: server.round >= start + 4, 60, what="four more rounds")
        wait_for(lambda: server.dropped, 30, what="the liar dropped")
        assert server.dropped[0][1] == member.id
        record = leader.gossip.groups()[leader.group_id or ""]
        print("node-level:", record.round, round(record.accuracy, 3), record.examples)
        assert record.accuracy < 0.999 and record.examples == len(leader.data.val)
        assert f"refused evaluate result of {member.id}" in caplog.text


# --- pure admission logic ---------------------------------------------------------------------


def test_fit_and_evaluate_bounds() -> None:
    limits = MemberLimits(train=100, val=20)
    assert check_fit(100, {"loss": 0.5, "node_id": "a"}, limits) is None
    assert check_evaluate(0.3, 20, {"accuracy": 1.0, "node_id": "a"}, limits) is None
    refused = {
        "too many": check_fit(101, {}, limits),
        "negative": check_fit(-1, {}, limits),
        "not int": check_fit(1.5, {}, limits),
        "nan loss": check_fit(5, {"loss": float("nan")}, limits),
        "huge loss": check_fit(5, {"loss": 1e13}, limits),
        "unknown key": check_fit(5, {"weight": 1.0}, limits),
        "accuracy > 1": check_evaluate(0.3, 5, {"accuracy": 1.5}, limits),
        "no accuracy": check_evaluate(0.3, 5, {}, limits),
        "str accuracy": check_evaluate(0.3, 5, {"accuracy": "1"}, limits),
        "bool accuracy": check_evaluate(0.3, 5, {"accuracy": True}, limits),
        "inf loss": check_evaluate(float("inf"), 5, {"accuracy": 0.5}, limits),
        "negative loss": check_evaluate(-1.0, 5, {"accuracy": 0.5}, limits),
        "val bound": check_evaluate(0.3, 21, {"accuracy": 0.5}, limits),
    }
    assert all(r is not None and r.strike for r in refused.values()), refused
    empty = check_evaluate(0.3, 0, {"accuracy": 0.5}, limits)
    assert empty is not None and not empty.strike  # honest code with an empty split
    # nothing announced: the documented cap
    assert check_fit(MAX_UNANNOUNCED_EXAMPLES, {}, None) is None
    assert check_fit(MAX_UNANNOUNCED_EXAMPLES + 1, {}, MemberLimits()) is not None


def test_announced_sizes_from_gossip_metadata() -> None:
    @dataclass
    class Member:
        id: str
        status: str
        meta: dict[str, Any]

    meta = {"group": "g-1", **announcement(80, 20)}
    members = [
        Member("a", "alive", meta),
        Member("b", "dead", meta),
        Member("c", "alive", {**meta, "group": "g-2"}),
        Member("d", "suspect", {"group": "g-1", "train": -5, "val": 2**60}),
        Member("e", "alive", {**meta, "role": "observer"}),
    ]
    assert limits_in_view(members, "g-1", "a") == MemberLimits(80, 20)
    assert limits_in_view(members, "g-1", "d") == MemberLimits(None, None)  # invalid: none
    for node_id in ("b", "c", "e", "zz"):
        assert limits_in_view(members, "g-1", node_id) is None
    assert limits_in_view(members, None, "a") is None


def test_strikes_drops_and_cool_down() -> None:
    now = [0.0]
    sessions = Sessions(strikes=3, cool_down=60.0, clock=lambda: now[0])
    bad = Refusal("lie")

    def round_(outcomes: dict[str, Refusal | None]) -> list[tuple[str, str | None, str]]:
        for session, outcome in outcomes.items():
            sessions.record(session, outcome)
        return sessions.end_round({"s1", "s2", "s3", "s4"})

    assert sessions.identify("s1", "10.0.0.9", "mallory") is None
    assert sessions.identify("s2", "10.0.0.2", "alice") is None
    # a good round resets the count; a round without results leaves it alone
    assert round_({"s1": bad, "s2": None}) == []
    assert round_({"s1": None}) == []
    assert round_({"s1": bad}) == [] and round_({}) == [] and round_({"s1": bad}) == []
    assert round_({"s1": bad, "s2": None}) == [("s1", "mallory", "refused 3 rounds in a row")]
    # a session cannot change the id it stated
    refusal = sessions.identify("s2", "10.0.0.2", "mallory")
    assert refusal is not None and refusal.strike
    # mallory from the same host is refused and dropped at the round's end ...
    refusal = sessions.identify("s3", "10.0.0.9", "mallory")
    assert refusal is not None and not refusal.strike
    sessions.record("s3", refusal)
    assert [d[0] for d in sessions.end_round({"s2", "s3"})] == ["s3"]
    # ... but the id stated from another host (the real mallory, say) is not
    assert sessions.identify("s4", "10.0.0.4", "mallory") is None
    now[0] = 61.0
    assert sessions.identify("s5", "10.0.0.9", "mallory") is None  # cool-down over


def test_message_limit_is_a_multiple_of_the_model() -> None:
    weights = get_weights(build_model(SPEC, seed=0))
    size = sum(w.nbytes for w in weights)
    assert message_limit(weights) == 2 * size + 1024**2


# --- two 400 MB updates against a leader process --------------------------------------

HUGE = 100_000_000  # float32 values: 400 MB per update


def _status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident) of a process, in MB."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


class _Flooder:
    """A stock Flower client whose every fit answers with one 400 MB array."""

    def __init__(self, updates: int) -> None:
        from flwr.client import NumPyClient

        outer = self
        self.updates = updates
        self.sent = 0

        class _Client(NumPyClient):
            def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                if outer.sent >= outer.updates:
                    return parameters, 10, {}
                outer.sent += 1
                return [np.ones(HUGE, np.float32)], 10, {}

            def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
                return 1.0, 1, {"accuracy": 0.5}

        self.client = _Client()

    def run(self, address: str, stop: threading.Event) -> None:
        """Join ``address`` again and again until ``updates`` fits have been answered."""
        from flwr.compat.client.app import start_client_internal

        while self.sent < self.updates and not stop.is_set():
            try:
                start_client_internal(
                    server_address=address,
                    node_config={},
                    client=self.client.to_client(),
                    insecure=True,
                    grpc_max_message_length=2**31 - 1,  # its own side lets anything through
                    transport="grpc-bidi",
                )
            except BaseException:  # refused or cut off: join again
                stop.wait(0.2)


def _round(url: str, gid: str) -> int:
    from tests.reliability_support import registry_groups

    group = registry_groups(url).get(gid)
    return int(group["metrics"]["round"]) if group else 0


@pytest.mark.slow
def test_two_400mb_updates_do_not_reach_the_leaders_memory(tmp_path: Path) -> None:
    from tests.reliability_support import Processes, registry_groups, start_registry

    procs = Processes(tmp_path)
    stop = threading.Event()
    try:
        _, url = start_registry(procs, tmp_path / "registry.db")

        def join(index: int) -> Any:
            args = ["join", "--bootstrap", url, "--preset", "test", "--data", "digits:iid"]
            args += ["--node-index", str(index), "--num-nodes", "4", "--name", f"p{index}"]
            # A long round timeout: the leader must not cut the upload off before it arrives.
            return procs.start(f"p{index}", *args, env={"MYCELIUM_ROUND_TIMEOUT": "60"})

        leader = join(0)
        gid, record = wait_for(
            lambda: next(iter(registry_groups(url).items()), None), 60, what="a group"
        )
        join(1)
        wait_for(lambda: len(registry_groups(url)[gid]["members"]) == 2, 60, what="a member")
        start = wait_for(lambda: (n := _round(url, gid)) >= 2 and n, 60, what="two rounds")
        before = _status(leader.process.pid)
        flooder = _Flooder(2)
        thread = threading.Thread(
            target=flooder.run, args=(record["flower_address"], stop), daemon=True
        )
        thread.start()
        wait_for(lambda: flooder.sent >= 2, 120, what="two 400 MB updates sent")
        sent_at = _round(url, gid)
        # Rounds go on with the honest members: two more after the second update.
        wait_for(lambda: _round(url, gid) >= sent_at + 2, 60, what="two more rounds")
        after = _status(leader.process.pid)
        group = registry_groups(url)[gid]
        print(
            f"leader RSS {before['VmRSS']:.0f} -> {after['VmRSS']:.0f} MB, "
            f"peak {before['VmHWM']:.0f} -> {after['VmHWM']:.0f} MB; "
            f"rounds {start} -> {group['metrics']['round']}, members {len(group['members'])}, "
            f"updates sent {flooder.sent}"
        )
        assert leader.alive()
        assert after["VmHWM"] - before["VmHWM"] < 200  # one decoded update alone is 400 MB
        assert len(group["members"]) == 2
    finally:
        stop.set()
        procs.stop_all()
