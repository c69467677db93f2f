"""A device's own network rendered from a description: the set-up script the init runs at boot
and the ruleset it loads (the boot itself is tests/test_gateway.py)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from lxembed.config import load_recipe
from lxembed.errors import UserError
from lxembed.net.device import device_rules, device_setup
from lxembed.net.model import load_description
from lxembed.net.rules import check

GATEWAY = load_recipe("gateway").path


def test_gateway_network_script_makes_the_bridge_before_the_rules():
    model = load_description(GATEWAY)
    script = device_setup(model)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh" and "set -eu" in lines
    add = "link add br0 address e6:6d:cb:8a:34:55 type bridge stp_state 0 forward_delay 0 " \
          "vlan_filtering 1"
    assert add in lines and "addr add 10.88.0.1/24 dev br0" in lines
    assert lines.index(add) < lines.index("link set dev br0 up")
    assert lines.index("ip -batch - <<'LXEMBED_IP'") < lines.index(add)
    assert lines.index("LXEMBED_IP") < lines.index("nft -f /etc/lxembed/network.nft")
    # The containers' ports are LXC's: their MACs come from their hooks; their tables are
    # loaded here, once, by name (filtered from the moment LXC makes them).
    assert "vh-web" not in script
    rules = device_rules(model)
    assert "table bridge lxembed_port_vh_web {" in rules and '"vh-dhcp"' in rules
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert str(GATEWAY.parent) not in script  # the same bytes from any checkout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_the_script_makes_what_it_says_in_a_namespace(tmp_path):
    # One ip -batch really makes the links (in a namespace of the test's own: this host kernel
    # has neither 8021q nor bridge VLAN filtering, so a bridge, a veth pair and a shim on it).
    path = tmp_path / "n.toml"
    path.write_text('name = "d"\n[[bridge]]\nname = "br7"\naddresses = ["10.7.0.1/24", '
                    '"fd07::1/64"]\n[[veth]]\nname = "up7"\n'
                    'peer = "dn7"\n[[macvlan]]\nname = "mv7"\nparent = "dn7"\n'
                    'addresses = ["10.8.0.1/24"]\n')
    script = device_setup(load_description(path))
    out = subprocess.run(["unshare", "-n", "sh", "-c", script + "\nip -d -br addr"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "network: done" in out.stdout
    assert re.search(r"^br7 +\S+ +10\.7\.0\.1/24 fd07::1/64", out.stdout, re.M), out.stdout
    assert re.search(r"^mv7@dn7 +\S+ +10\.8\.0\.1/24", out.stdout, re.M), out.stdout


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
