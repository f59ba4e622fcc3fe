"""A node's own identity over the real parts: a registry over HTTP on a SQLite file, a node with
gossip on ZeroMQ, a state directory on disk.

The node enrols at its first registration (admission token, public key, CSR), keeps what the
registry issued in its state directory (owner-only), and is the same node after a restart: same
id, its credential (not the admission token) on every request, even once the registry was
restarted with another admission token.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootstrap.server import RegistryServer
from cli.main import main
from mycelium_p2p.identity import IdentityError
from mycelium_p2p.keystore import FILE, load_or_create
from mycelium_p2p.learning.data import load_node_data
from mycelium_p2p.node import Node
from mycelium_p2p.node_config import NodeConfig
from mycelium_p2p.registry_client import RegistryClient, RegistryError
from tests.helpers import wait_for

TOKEN = "node-identity-token"
ADMIN = "node-identity-admin"


def _node(url: str, state: Path, token: str = TOKEN) -> Node:
    config = NodeConfig.test().replace(
        token=token, registry_url=url, name="alice", state_dir=str(state)
    )
    return Node(config, data=load_node_data("digits:iid", 0, 2, seed=0))


def _registered(url: str, node_id: str, token: str = ADMIN) -> bool:
    with RegistryClient(url, token=token, retries=0) as reader:
        return any(n.id == node_id and n.status == "alive" for n in reader.nodes())


def test_a_state_file_others_can_read_is_refused(tmp_path: Path) -> None:
    identity = load_or_create(tmp_path / "s")
    path = tmp_path / "s" / FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    assert load_or_create(tmp_path / "s").node_id == identity.node_id
    with pytest.raises(IdentityError, match="belongs to node"):
        load_or_create(tmp_path / "s", "someone-else")
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="readable by others"):
        load_or_create(tmp_path / "s")


@pytest.mark.slow
def test_a_node_enrols_once_and_is_itself_after_restarts(tmp_path: Path) -> None:
    db, ca_dir, state = tmp_path / "r.db", tmp_path / "ca", tmp_path / "alice"
    with RegistryServer(db, token=TOKEN, admin_token=ADMIN, ca_dir=ca_dir) as registry:
        url = str(registry.url)
        node = _node(url, state)
        node.start()
        try:
            wait_for(
                lambda: _registered(url, node.id) and node.identity and node.identity.enrolled,
                30,
                what="the node registered and enrolled",
            )
        finally:
            node.stop()
        first_id = node.id
        saved = json.loads((state / FILE).read_text())
        assert saved["node_id"] == first_id and saved["credential"] and saved["certificate"]
        assert stat.S_IMODE((state / FILE).stat().st_mode) == 0o600
        # Its credential reads; the admission token cannot act for it.
        with RegistryClient(url, token=saved["credential"], retries=0) as own:
            assert own.node(first_id).id == first_id
        token_only = RegistryClient(url, token=TOKEN, retries=0)
        with token_only, pytest.raises(RegistryError) as refused:
            token_only.heartbeat(first_id)
        assert refused.value.status == 403

    # The registry restarts with a new admission token; the node restarts with the old one:
    # it is the same node, speaking with its credential.
    with RegistryServer(db, token="rotated-token", admin_token=ADMIN, ca_dir=ca_dir) as registry:
        url = str(registry.url)
        again = _node(url, state, token=TOKEN)
        again.start()
        try:
            assert again.id == first_id
            wait_for(lambda: _registered(url, first_id), 30, what="the node registered again")
            assert again.phase.value != "stopped", again.failure
        finally:
            again.stop()
        assert json.loads((state / FILE).read_text())["credential"] == saved["credential"]


@pytest.mark.slow
def test_an_operator_revocation_reaches_every_node() -> None:
    """The operator revokes a node at the registry; the others fetch the signed list (with
    their heartbeats) or get it by gossip, then refuse the revoked node. The time is printed."""
    from bootstrap.server import CLUSTER_ADMIN_TOKEN, cluster_registry
    from mycelium_p2p.testing.local_cluster import LocalCluster

    config = NodeConfig.test().replace(token=TOKEN, group_capacity=4)
    datas = [load_node_data("digits:iid", i, 4, seed=0) for i in range(4)]
    with LocalCluster(datas, config, registry=cluster_registry) as cluster:
        nodes = cluster.nodes
        ids = {n.id for n in nodes}

        def live(node: Node) -> set[str]:
            return {m.id for m in node.gossip.members() if m.status == "alive"}

        wait_for(lambda: all(live(n) == ids for n in nodes), 60, what="every node sees all")

        def in_session() -> list[str]:
            servers = [n.learning.server for n in nodes if n.learning.server is not None]
            return [i for server in servers for i in server.session_nodes()]

        wait_for(in_session, 60, what="a member in a Flower session")
        victim = next(n for n in nodes if n.id == in_session()[0])  # its session is open
        others = [n for n in nodes if n is not victim]
        start = time.monotonic()
        result = CliRunner().invoke(
            main,
            ["revoke", victim.id, "--bootstrap", cluster.url, "--admin-token", CLUSTER_ADMIN_TOKEN],
        )
        assert result.exit_code == 0, result.output
        assert f"revoked {victim.id}" in result.output
        refused = CliRunner().invoke(
            main, ["revoke", others[0].id, "--bootstrap", cluster.url, "--admin-token", TOKEN]
        )
        assert refused.exit_code != 0 and "403" in refused.output

        def refused() -> bool:
            return all(
                n.identity is not None
                and n.identity.trust is not None
                and n.identity.trust.revoked(victim.id)
                and victim.id not in live(n)
                for n in others
            )

        wait_for(refused, 30, what="every node refuses the revoked one")
        took = time.monotonic() - start
        # A Flower session it had open ends before the next round; no new one is admitted.
        wait_for(lambda: victim.id not in in_session(), 30, what="its Flower session ended")
        print(
            f"operator revocation: {len(others)} nodes refuse {victim.id} after {took:.2f}s "
            f"(heartbeat interval {config.registry.heartbeat_interval:g}s)"
        )
        # Its credential is refused by the registry too.
        assert victim.identity is not None and victim.identity.credential
        own = RegistryClient(cluster.url, token=victim.identity.credential, retries=0)
        with own, pytest.raises(RegistryError) as err:
            own.heartbeat(victim.id)
        assert err.value.status == 401


@pytest.mark.slow
def test_a_node_given_only_a_peer_and_the_token_enrols_and_joins(tmp_path: Path) -> None:
    """``join --peer host:port --token T``: the node asks the peer for the registry's URL (its
    introduction listener), enrols there, and joins gossip."""
    with RegistryServer(tmp_path / "r.db", token=TOKEN, admin_token=ADMIN) as registry:
        url = str(registry.url)
        first = _node(url, tmp_path / "first")
        first.start()
        try:
            wait_for(lambda: _registered(url, first.id), 30, what="the first node registered")
            wait_for(lambda: first.identity and first.identity.enrolled, 30, what="enrolled")
            config = NodeConfig.test().replace(
                token=TOKEN,
                peers=(str(first.gossip.address),),
                name="bob",
                state_dir=str(tmp_path / "bob"),
            )
            second = Node(config, data=load_node_data("digits:iid", 1, 2, seed=0))
            assert second.config.network.registry_url is None
            second.start()
            try:
                wait_for(lambda: _registered(url, second.id), 30, what="the newcomer enrolled")
                wait_for(
                    lambda: (
                        {m.id for m in first.gossip.members() if m.status == "alive"}
                        == {first.id, second.id}
                    ),
                    30,
                    what="both in gossip",
                )
                assert second.gossip.registry_url == url
            finally:
                second.stop()
        finally:
            first.stop()


@pytest.mark.slow
def test_the_viewer_and_status_watch_a_network_with_a_token() -> None:
    """Observers get a ticket of their own (from the registry, found through the peer) and see
    every node; without the token they get none."""
    from bootstrap.server import cluster_registry
    from cli.status_cmds import gossip_snapshot
    from mycelium_p2p.testing.local_cluster import LocalCluster
    from viz.sources import GossipSource, SourceError

    config = NodeConfig.test().replace(token=TOKEN, group_capacity=2)
    datas = [load_node_data("digits:iid", i, 2, seed=0) for i in range(2)]
    with LocalCluster(datas, config, registry=cluster_registry) as cluster:
        ids = {n.id for n in cluster.nodes}
        wait_for(
            lambda: all(n.identity and n.identity.enrolled for n in cluster.nodes), 30, what="enrol"
        )
        peer = str(cluster.nodes[0].gossip.address)
        wait_for(
            lambda: {n.id for n in gossip_snapshot([peer], TOKEN).nodes} >= ids,
            30,
            what="status --peer sees every node",
        )
        source = GossipSource([peer], token=TOKEN)
        source.start()
        try:
            wait_for(
                lambda: {m.id for m in source._node.members()} >= ids, 30, what="viewer sees all"
            )
        finally:
            source.close()
        with pytest.raises(SourceError):
            GossipSource([peer], token="not-the-token").start()


@pytest.mark.slow
def test_a_node_of_another_network_stops_with_one_line(tmp_path: Path) -> None:
    """A state directory enrolled with one network, started against another network's registry:
    retrying cannot help, so the node stops and says why in one line."""
    state = tmp_path / "alice"
    with RegistryServer(tmp_path / "a.db", token=TOKEN, ca_dir=tmp_path / "ca-a") as first:
        node = _node(str(first.url), state)
        node.start()
        try:
            wait_for(
                lambda: node.identity is not None and node.identity.enrolled, 30, what="enrolled"
            )
        finally:
            node.stop()
    with RegistryServer(tmp_path / "b.db", token=TOKEN, ca_dir=tmp_path / "ca-b") as other:
        stranger = _node(str(other.url), state)
        stranger.start()
        try:
            wait_for(lambda: stranger.phase.value == "stopped", 30, what="the node to stop")
        finally:
            stranger.stop()
        assert stranger.failure is not None and "another network" in stranger.failure


@pytest.mark.slow
def test_two_unnamed_nodes_with_a_token_on_one_machine_are_two_nodes(tmp_path: Path) -> None:
    """Without --name or --state-dir both nodes would keep their identity in the same default
    folder: the second finds it in use and takes an identity of its own for this run."""
    from mycelium_p2p.testing.processes import ProcessGroup, mycelium_command

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    with RegistryServer(tmp_path / "r.db", token=TOKEN, admin_token=ADMIN) as registry:
        url = str(registry.url)
        args = ["join", "--bootstrap", url, "--token", TOKEN, "--preset", "test"]
        group = ProcessGroup(tmp_path / "logs")
        try:
            for i in range(2):
                group.start(f"n{i}", mycelium_command(*args, "--data", "digits:iid"), env=env)

            def alive() -> set[str]:
                with RegistryClient(url, token=ADMIN, retries=0) as reader:
                    return {n.id for n in reader.nodes() if n.status == "alive"}

            wait_for(lambda: len(alive()) == 2, 90, what="two nodes registered")
        finally:
            group.stop()
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "in use by another running node" in logs
