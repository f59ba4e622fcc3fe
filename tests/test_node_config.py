"""Where node settings come from: flags, a TOML file, MYCELIUM_* variables, then a preset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mycelium_p2p.netaddr import host_of, is_loopback, reachable_address, route_source
from mycelium_p2p.node_config import ConfigError, NodeConfig, load_config


def test_flags_beat_toml_which_beats_environment_which_beats_the_preset(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(
        'heartbeat_interval = 7\ngroup_capacity = 4\nname = "from-toml"\n'
        "[gossip]\nprobe_interval = 2.5\n"
    )
    env = {
        "MYCELIUM_HEARTBEAT_INTERVAL": "9",
        "MYCELIUM_GROUP_EVALUATION_INTERVAL": "11",
        "MYCELIUM_NAME": "from-env",
        "OTHER": "ignored",
    }
    config = load_config({"name": "from-flag", "peers": ()}, toml, env, preset="local")
    assert config.name == "from-flag"
    assert config.heartbeat_interval == 7.0  # TOML over environment
    assert config.group_capacity == 4
    assert config.group_evaluation_interval == 11.0  # environment over preset
    assert config.gossip.probe_interval == 2.5
    assert config.bind_host == NodeConfig.local().bind_host  # the preset fills the rest


def test_seed_defaults() -> None:
    config = load_config(env={})
    assert config.heartbeat_interval == 30.0
    assert config.group_evaluation_interval == 60.0
    assert config.group_capacity == 5
    assert config.switch_threshold == 0.05
    assert config.registry_url is None


def test_peers_from_the_environment_are_a_list() -> None:
    config = load_config(env={"MYCELIUM_PEERS": "a:1, b:2"})
    assert config.peers == ("a:1", "b:2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1\n", "unknown setting 'nonsense'"),
        ("heartbeat_interval = 'soon'\n", "heartbeat_interval"),
        ("[gossip]\nbogus = 1\n", "unknown gossip setting 'bogus'"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_files_are_explained(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(toml_path=toml, env={})


def test_missing_file_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(toml_path="/nonexistent/node.toml", env={})
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(env={}, preset="fast")


def test_the_advertised_address_is_the_one_peers_can_reach() -> None:
    lan = NodeConfig.lan()  # binds every interface
    assert lan.node_address == ""  # unset: resolved when the node starts
    assert replace(lan, node_address="10.0.0.7").resolved().node_address == "10.0.0.7"
    assert replace(lan, bind_host="10.0.0.8").resolved().node_address == "10.0.0.8"
    # Every peer on this machine: loopback. A peer elsewhere: the route's source address.
    local = replace(lan, peers=("127.0.0.1:7000",), registry_url="http://localhost:8000")
    assert local.resolved().node_address == "127.0.0.1"
    assert local.advertised_host() == "127.0.0.1"
    assert replace(lan, peers=("192.0.2.1:7000",)).resolved().node_address == route_source(
        "192.0.2.1"
    )


def test_address_helpers() -> None:
    assert host_of("http://10.1.2.3:8000/groups") == "10.1.2.3"
    assert host_of("10.1.2.3:7000") == "10.1.2.3"
    assert host_of("node-7") == "node-7"
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")
    assert not is_loopback("node-7")
    assert route_source("127.0.0.1") == "127.0.0.1"
    assert route_source("no-such-host.invalid") == "127.0.0.1"  # no route: loopback
    assert reachable_address([], "0.0.0.0") == "127.0.0.1"
    assert reachable_address(["10.0.0.1:1"], "127.0.0.1") == "127.0.0.1"  # bound to loopback
