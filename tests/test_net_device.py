"""A device's own network rendered from a description: the set-up script the init runs at boot
and the ruleset it loads (the boot itself is tests/test_gateway.py)."""

from __future__ import annotations

import subprocess

import pytest

from lxembed.config import load_recipe
from lxembed.errors import UserError
from lxembed.net.device import device_rules, device_setup
from lxembed.net.model import load_description
from lxembed.net.rules import check

GATEWAY = load_recipe("gateway").path


def test_gateway_network_script_makes_the_bridge_before_the_rules():
    script = device_setup(load_description(GATEWAY))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh" and "set -eu" in lines
    assert "ip link add br0 type bridge" in lines
    assert "echo 0 > /sys/class/net/br0/bridge/forward_delay" in lines
    assert "ip addr add 10.88.0.1/24 dev br0" in lines
    assert lines.index("ip link add br0 type bridge") < lines.index("ip link set dev br0 up")
    # The containers' ports are LXC's: their MACs and tables come from their hooks.
    assert "vh-web" not in script
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)


def test_gateway_rules_pass_nft_check():
    check(device_rules(load_description(GATEWAY)) or "", "gateway rules")


def test_the_containers_name_the_devices_ports():
    for name in ("web", "dhcp"):
        config = (GATEWAY.parent / "gateway" / f"{name}.toml").read_text()
        assert 'description = "../gateway.toml"' in config


@pytest.mark.parametrize("extra, what", [
    ('[[port]]\nname = "vh-x"\nbridge = "br0"\npeer = "eth0"\nnetns = "x"\n', "port vh-x (netns)"),
    ('[[port]]\nname = "vh-y"\nbridge = "br0"\npeer = "vy"\n', "port vh-y (made by net up)"),
])
def test_what_a_device_cannot_make_is_refused(tmp_path, extra, what):
    path = tmp_path / "n.toml"
    path.write_text('name = "d"\n[[bridge]]\nname = "br0"\naddresses = ["10.1.0.1/24"]\n' + extra)
    with pytest.raises(UserError, match=r"cannot be set up on the device") as err:
        device_setup(load_description(path))
    assert what in str(err.value)
