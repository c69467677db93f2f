"""Network descriptions without touching a host: validation (file:line errors), the rendered
nftables rules checked by the real `nft -c` in a throwaway namespace, docs, host-config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lxembed.errors import UserError
from lxembed.net import rules
from lxembed.net.host_config import host_config_files
from lxembed.net.model import load_description

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "net-demo.toml"

needs_nft = pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed "
                               "(apt-get install nftables)")


def describe(tmp_path: Path, text: str, name: str = "n.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_demo_model_has_the_declared_topology():
    m = load_description(DEMO)
    assert m.name == "net-demo"
    br = m.bridge("lxebr0")
    assert br.addresses == ["10.77.0.1/24"] and not br.stp and br.forward_delay == 0
    assert (br.dhcp.first, br.dhcp.last) == ("10.77.0.100", "10.77.0.150")
    assert br.dhcp.static == {"02:00:00:77:00:0c": "10.77.0.12"}
    a, b, c = (m.port(n) for n in ("vh-a", "vh-b", "vh-c"))
    assert (a.hwaddr, a.peer, a.peer_hwaddr, a.netns) == ("02:00:00:77:01:0a", "eth0",
                                                          "02:00:00:77:00:0a", "lxe-a")
    assert a.gateway == "10.77.0.1" and a.anti_spoofing
    assert b.inbound_tcp == [8080] and b.allowed_ips == ["10.77.0.11"]
    assert c.addresses == [] and c.allowed_ips == ["10.77.0.12"]  # from the static lease
    shim, inside = m.macvlans
    assert (shim.name, shim.parent, shim.mode, shim.netns) == ("mvh0", "vp0", "bridge", None)
    assert (inside.netns, inside.addresses, inside.gateway) == ("lxe-m", ["10.78.0.10/24"],
                                                                "10.78.0.1")
    assert m.namespaces() == ["lxe-a", "lxe-b", "lxe-c", "lxe-m"]


@pytest.mark.parametrize("text, line, message", [
    ('[[bridge]]\nname = "br0"\nstp = "no"\n', 3, "stp: expected true or false"),
    ('[[bridge]]\nname = "br0"\n\n[[port]]\nname = "p0"\nbridge = "br9"\n', 6,
     "bridge 'br9' is not declared"),
    ('[[bridge]]\nname = "br0"\n\n[[port]]\nname = "p0"\nbridge = "br0"\n'
     'netns = "x"\npeer_hwaddr = "03:00:00:00:00:01"\n', 8, "multicast MAC"),
    ('[[bridge]]\nname = "br0"\naddresses = ["10.0.0.1"]\n', 3, "no prefix length"),
    ('[[bridge]]\nname = "br0"\ncolour = 1\n', 3, "unknown key [bridge] 'colour'"),
    ('[[bridge]]\nname = "br0"\n[[bridge]]\nname = "br0"\n', 4, "already declared"),
    ('[[bridge]]\nname = "br0"\n\n[[port]]\nname = "p0"\nbridge = "br0"\n'
     'hwaddr = "02:00:00:00:00:01"\nnetns = "x"\n[[port]]\nname = "p1"\nbridge = "br0"\n'
     'netns = "y"\nhwaddr = "02:00:00:00:00:01"\n', 13, "already the MAC of"),
    ('[[bridge]]\nname = "a-name-far-too-long"\n', 2, "is not an interface name"),
    ('[[port]]\nname = "p0"\nbridge = "br0"\ninbound_tcp = [70000]\n', 3, "not declared"),
])
def test_bad_descriptions_name_file_and_line(tmp_path, text, line, message):
    path = describe(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_description(path)
    assert str(err.value).startswith(f"{path}:{line}:"), str(err.value)
    assert message in str(err.value)


def test_dhcp_range_must_sit_in_the_bridge_subnet(tmp_path):
    path = describe(tmp_path, '[[bridge]]\nname = "br0"\naddresses = ["10.1.0.1/24"]\n'
                    'dhcp = { range = ["10.2.0.10", "10.2.0.20"] }\n')
    with pytest.raises(UserError, match=r":4: \[\[bridge\]\] #1: dhcp range address 10.2.0.10"):
        load_description(path)


def test_a_recipe_carries_the_same_tables(tmp_path, cli):
    recipe = describe(tmp_path, 'description = "gw"\n\n[host_network]\nname = "gw"\n\n'
                      '[[host_network.bridge]]\nname = "gwbr0"\naddresses = ["10.9.0.1/24"]\n\n'
                      '[[host_network.port]]\nname = "gw-p0"\nbridge = "gwbr0"\npeer = "gw-c0"\n'
                      'addresses = ["10.9.0.2/24"]\nisolatd = true\n', "gw.toml")
    with pytest.raises(UserError) as err:
        load_description(recipe)
    assert str(err.value).startswith(f"{recipe}:15: unknown key [host_network.port] 'isolatd'")
    recipe.write_text(recipe.read_text().replace("isolatd", "isolated"))
    m = load_description(recipe)
    assert m.port("gw-p0").isolated and m.bridges[0].name == "gwbr0"
    # The recipe loader validates the same table.
    from lxembed.config.loader import load_recipe
    assert load_recipe(str(recipe)).settings["host_network"]["port"][0]["isolated"] is True


@needs_nft
def test_rendered_rules_pass_nft_check():
    m = load_description(DEMO)
    text = rules.render(m)
    rules.check(text, "demo")  # raises on any refusal
    assert rules.tables_in(text) == [["bridge", "lxembed_net_demo"]]
    assert "iifname vmap" in text and "chain from_vh_c" in text and "chain to_vh_b" in text
    # the DHCP DISCOVER accept comes before the source-address drop, in every filtered port
    for port in ("vh_a", "vh_b", "vh_c"):
        chain = text.split(f"chain from_{port} {{")[1].split("\n\t}")[0]
        assert chain.index("udp dport 67 accept") < chain.index("ip saddr != ")


@needs_nft
def test_nft_check_refuses_what_the_kernel_refuses(tmp_path):
    with pytest.raises(UserError, match="nft -c refused"):
        rules.check("table bridge t {\n\tchain c {\n\t\tether saddr != nonsense drop\n\t}\n}\n",
                    "bad")


@needs_nft
def test_nat_and_host_input_render_an_inet_table(tmp_path):
    path = describe(tmp_path, '[[bridge]]\nname = "br0"\naddresses = ["10.5.0.1/24"]\n'
                    'host_tcp = [22]\ndhcp = { range = ["10.5.0.10", "10.5.0.20"] }\n'
                    '[[nat]]\nbridge = "br0"\nuplink = "wan0"\n')
    text = rules.render(load_description(path))
    rules.check(text, "nat")
    assert ["inet", "lxembed_n"] in rules.tables_in(text)
    assert 'ip saddr 10.5.0.0/24 ip daddr != 10.5.0.0/24 oifname "wan0" masquerade' in text
    assert "tcp dport { 22 } accept" in text and "udp dport { 67 } accept" in text


def test_cli_check_and_show_rules(cli):
    result = cli("net", "show", "--rules", str(DEMO))
    assert result.returncode == 0, result.stderr
    assert "table bridge lxembed_net_demo {" in result.stdout
    result = cli("net", "check", "/nonexistent.toml")
    assert result.returncode == 2 and result.stderr.startswith("lxembed: error: /nonexistent")


def test_host_config_covers_every_host_interface(cli, tmp_path):
    files = host_config_files(load_description(DEMO))
    udev = next(t for p, t in files.items() if p.startswith("etc/udev/"))
    for name in ("lxebr0", "vh-a", "vh-b", "vh-c", "vp0", "vp1", "mvh0"):
        assert f'KERNEL=="{name}"' in udev
    assert 'KERNEL=="eth0"' not in udev  # the namespaced ends are not the host's
    nm = next(t for p, t in files.items() if "NetworkManager" in p)
    assert "unmanaged-devices=interface-name:lxebr0;" in nm
    result = cli("net", "host-config", str(DEMO), "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "etc/systemd/network/10-lxembed-net-demo.network").read_text().count(
        "Unmanaged=yes") == 1


def test_networking_reference_is_current(cli):
    result = cli("net-docs", check=True)
    assert (ROOT / "docs/networking.md").read_text() == result.stdout, \
        "run: lxembed net-docs > docs/networking.md"



def test_lxc_hooks_only_for_ports_lxc_makes(cli):
    result = cli("net", "lxc-hooks", str(DEMO), "vh-a")
    assert result.returncode == 2 and 'created_by = "lxc"' in result.stderr
    result = cli("net", "lxc-hooks", str(DEMO), "vh-z")
    assert result.returncode == 2 and "no port 'vh-z' (ports: vh-a, vh-b, vh-c)" in result.stderr
