"""Where node settings come from: flags, a TOML file, MYCELIUM_* variables, then a preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium_p2p.netaddr import host_of, is_loopback, reachable_address, route_source
from mycelium_p2p.node_config import ConfigError, NodeConfig, load_config


def test_flags_beat_environment_which_beats_toml_which_beats_the_preset(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(
        'heartbeat_interval = 7\ngroup_capacity = 4\nname = "from-toml"\n'
        "[choice]\nswitch_samples = 6\n[gossip]\nprobe_interval = 2.5\n"
    )
    env = {
        "MYCELIUM_HEARTBEAT_INTERVAL": "9",
        "MYCELIUM_GROUP_EVALUATION_INTERVAL": "11",
        "MYCELIUM_NAME": "from-env",
        "MYCELIUM_GOSSIP_FANOUT": "5",
        "OTHER": "ignored",
    }
    config = load_config({"name": "from-flag", "peers": ()}, toml, env, preset="local")
    assert config.network.name == "from-flag"  # flags first
    assert config.registry.heartbeat_interval == 9.0  # then the environment, over the file
    assert config.group.group_capacity == 4  # then the file
    assert config.choice.switch_samples == 6  # a section table in the file
    assert config.choice.group_evaluation_interval == 11.0
    assert config.gossip.probe_interval == 2.5 and config.gossip.fanout == 5
    assert config.network.bind_host == NodeConfig.local().network.bind_host  # the preset


def test_seed_defaults() -> None:
    config = load_config(env={})
    assert config.registry.heartbeat_interval == 30.0
    assert config.choice.group_evaluation_interval == 60.0
    assert config.group.group_capacity == 5
    assert config.choice.switch_threshold == 0.05
    assert config.network.registry_url is None


def test_peers_from_the_environment_are_a_list() -> None:
    config = load_config(env={"MYCELIUM_PEERS": "a:1, b:2"})
    assert config.network.peers == ("a:1", "b:2")


def test_on_one_machine_the_local_preset_is_the_default() -> None:
    local = load_config({"peers": ("127.0.0.1:7000",)}, env={}, preset=None)
    assert (
        local.choice.group_evaluation_interval
        == NodeConfig.local().choice.group_evaluation_interval
    )
    lan = load_config({"registry_url": "http://10.0.0.5:8000"}, env={}, preset=None)
    assert lan.choice.group_evaluation_interval == 60.0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"MYCELIUM_HEARTBEAT_INTERVAL": "-5"}, "heartbeat_interval (environment MYCELIUM_HEARTB"),
        ({"MYCELIUM_GROUP_CAPACITY": "0"}, "group_capacity (environment MYCELIUM_GROUP_CAPACITY"),
        ({"MYCELIUM_POLICY": "best"}, "policy"),
        ({"MYCELIUM_GOSSIP_PROBE_INTERVAL": "fast"}, "gossip.probe_interval"),
    ],
)
def test_bad_values_in_the_environment_are_refused_by_name(
    source: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", "\\(")):
        load_config(env=source)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1\n", "unknown setting 'nonsense'"),
        ("heartbeat_interval = 'soon'\n", "heartbeat_interval"),
        ("[gossip]\nbogus = 1\n", "unknown gossip setting 'bogus'"),
        ('[gossip]\nprobe_interval = "fast"\n', "gossip.probe_interval"),
        ("[choice]\nheartbeat_interval = 3\n", "unknown setting 'heartbeat_interval' in .choice."),
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
    assert lan.network.node_address == ""  # unset: resolved when the node starts
    assert lan.replace(node_address="10.0.0.7").resolved().network.node_address == "10.0.0.7"
    assert lan.replace(bind_host="10.0.0.8").resolved().network.node_address == "10.0.0.8"
    # Every peer on this machine: loopback. A peer elsewhere: the route's source address.
    local = lan.replace(peers=("127.0.0.1:7000",), registry_url="http://localhost:8000")
    assert local.resolved().network.node_address == "127.0.0.1"
    assert local.advertised_host() == "127.0.0.1"
    far = lan.replace(peers=("192.0.2.1:7000",)).resolved()
    assert far.network.node_address == route_source("192.0.2.1")


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
