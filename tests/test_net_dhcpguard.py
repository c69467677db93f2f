"""The DHCP server guard (issue 20): only a port declared `dhcp_server` may answer DHCP and
DHCPv6 clients or send IPv6 router advertisements and redirects. The rendered rules (checked
by the real `nft -c` in a throwaway namespace), then for real in a host namespace of the test's
own (net_helpers): a busybox udhcpd on a port that is not the server gives no lease, to a
client port nor to the host on the bridge; declared, the same udhcpd does.
"""

from __future__ import annotations

import shutil
import socket
import struct
import sys
import time
from pathlib import Path

import pytest
from net_helpers import host_namespace

from lxembed.config import load_recipe
from lxembed.errors import UserError
from lxembed.net import rules
from lxembed.net.hooks import lxc_hook_scripts
from lxembed.net.model import load_description

needs_nft = pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed "
                               "(apt-get install nftables)")

GUARD = ["udp sport 67 udp dport 68 drop", "udp sport 547 udp dport 546 drop",
         "icmpv6 type { nd-router-advert, nd-redirect } drop", "icmp type redirect drop"]

PORTS = """
name = "guard"

[[bridge]]
name = "gbr0"
addresses = ["10.91.0.1/24"]

[[port]]
name = "g-srv"
bridge = "gbr0"
netns = "g-srv"
peer_hwaddr = "02:00:00:91:00:02"
addresses = ["10.91.0.2/24"]
dhcp_server = {server}

[[port]]
name = "g-cli"                  # a DHCP client: may only do DHCP
bridge = "gbr0"
netns = "g-cli"
peer_hwaddr = "02:00:00:91:00:03"
"""

ANY = """
[[port]]
name = "g-any"                  # no anti-spoofing: any source, but still no DHCP server
bridge = "gbr0"
netns = "g-any"
peer_hwaddr = "02:00:00:91:00:04"
addresses = ["10.91.0.4/24"]
anti_spoofing = false
"""


def describe(tmp_path: Path, text: str, name: str = "guard.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def chain(text: str, name: str) -> str:
    return text.split(f"chain {name} {{")[1].split("\n\t}")[0]


# -- the rendered rules --------------------------------------------------------------------

@needs_nft
def test_only_the_declared_server_may_answer(tmp_path):
    text = rules.render(load_description(describe(
        tmp_path, PORTS.format(server="true") + ANY)))
    rules.check(text, "guard")  # the kernel takes it
    srv, cli, any_ = (chain(text, f"from_g_{n}") for n in ("srv", "cli", "any"))
    assert not [r for r in GUARD if r in srv]
    assert "nd-router-advert" not in srv  # the server's router advertisements pass too
    assert "# port g-srv: sends only as 02:00:00:91:00:02 10.91.0.2; the DHCP server" in text
    for c in (cli, any_):
        at = [c.index(r) for r in GUARD]
        assert at == sorted(at)
    # before the DHCP client accept (an accept ends the chain) and the source address drops
    assert cli.index(GUARD[-1]) < cli.index("udp dport 67 accept") < cli.index("ether type ip")
    # without anti-spoofing: the guard alone, in a chain named for the port it protects
    assert "# port g-any: any source (anti_spoofing = false)\n\tchain from_g_any {" in text
    assert [r.strip() for r in any_.strip().splitlines() if not r.strip().startswith("#")] \
        == GUARD
    assert '"g-any" : jump from_g_any' in text


@needs_nft
def test_an_unfiltered_server_has_no_chain_and_the_default_is_not_a_server(tmp_path):
    text = rules.render(load_description(describe(
        tmp_path, PORTS.format(server="true").replace(
            'dhcp_server = true', 'dhcp_server = true\nanti_spoofing = false'))))
    rules.check(text, "guard")
    assert "from_g_srv" not in text and "chain from_g_cli" in text
    m = load_description(describe(tmp_path, PORTS.replace("dhcp_server = {server}\n", "")))
    assert not m.port("g-srv").dhcp_server
    assert all(r in chain(rules.render(m), "from_g_srv") for r in GUARD)


def test_dhcp_server_must_be_true_or_false(tmp_path):
    path = describe(tmp_path, PORTS.format(server='"yes"'))
    with pytest.raises(UserError) as err:
        load_description(path)
    assert str(err.value).startswith(f"{path}:14: [port] dhcp_server: expected true or false")


@needs_nft
def test_gateway_dhcp_port_serves_and_web_port_does_not():
    """The device's ports get their tables from their LXC start-host hooks."""
    model = load_description(load_recipe("gateway").path)
    assert model.port("vh-dhcp").dhcp_server and not model.port("vh-web").dhcp_server
    for port, guarded in (("vh-dhcp", False), ("vh-web", True), ("vh-vl", True)):
        start, _ = lxc_hook_scripts(model, port)
        table = start.split("<<'LXEMBED_RULES'\n")[1].split("LXEMBED_RULES")[0]
        rules.check(table, port)
        assert all(r in table for r in GUARD) == guarded, port


# -- for real, in the test's own namespaces ------------------------------------------------

@pytest.fixture
def host(tmp_path):
    if not shutil.which("busybox"):
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    with host_namespace(tmp_path) as h:
        yield h


def udhcpc(host, netns: str, iface: str, *extra: str):
    """One busybox udhcpc run that only asks (-s /bin/true: nothing is configured); its output.
    Three DISCOVERs a second apart, then it gives up."""
    cmd = ["busybox", "udhcpc", "-i", iface, "-n", "-q", "-t", "3", "-T", "1", "-s", "/bin/true",
           *extra]
    result = host.ns(netns, *cmd, check=False) if netns else host.run(*cmd, check=False)
    return result.stdout + result.stderr


@pytest.mark.slow
def test_rogue_udhcpd_gives_no_lease_until_its_port_is_declared_the_server(host, tmp_path):
    desc = describe(tmp_path, PORTS.format(server="false"))
    host.lxembed("net", "up", str(desc))
    conf = describe(tmp_path, f"start 10.91.0.100\nend 10.91.0.110\ninterface eth0\n"
                    f"lease_file {tmp_path}/udhcpd.leases\npidfile {tmp_path}/udhcpd.pid\n"
                    "opt subnet 255.255.255.0\nopt router 10.91.0.2\n", "udhcpd.conf")
    log = tmp_path / "udhcpd.log"
    # -a 100: its ARP probe of an address before offering it waits 0.1 s, not 2 s
    server = host.popen("ip", "netns", "exec", "g-srv", "sh", "-c",
                        f"exec busybox udhcpd -f -a 100 {conf} > {log} 2>&1")
    try:
        time.sleep(0.3)
        # The rogue answers (its log says so) but no answer crosses the bridge: not to the
        # client port (unicast to its MAC), not to the host on the bridge (a broadcast, -B).
        started = time.monotonic()
        assert "obtained" not in udhcpc(host, "g-cli", "eth0")
        assert "obtained" not in udhcpc(host, "", "gbr0", "-B")
        print(f"no lease: {time.monotonic() - started:.1f} s for both")
        assert "sending OFFER" in log.read_text(), log.read_text()
        # The same udhcpd, now declared: `up` again replaces the port's chain.
        desc.write_text(PORTS.format(server="true"))
        host.lxembed("net", "up", str(desc))
        started = time.monotonic()
        assert "lease of 10.91.0.10" in udhcpc(host, "g-cli", "eth0")
        out = udhcpc(host, "", "gbr0", "-B")
        print(f"leases: {time.monotonic() - started:.2f} s for both")
        assert "lease of 10.91.0.10" in out and "obtained from 10.91.0.2" in out
    finally:
        server.kill()
        server.wait()
    host.lxembed("net", "down", str(desc))
    assert host.run("nft", "list", "tables").stdout == ""


def _ipv4_udp(src: str, dst: str, sport: int, dport: int) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return header + struct.pack("!HHHH", sport, dport, 8, 0)


def _ipv4_icmp(src: str, dst: str, icmp_type: int) -> bytes:
    udp = _ipv4_udp(src, dst, 0, 0)  # the same 20-byte header, then ICMP instead of UDP
    header = udp[:9] + b"\x01" + b"\0\0" + udp[12:20]
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return header + struct.pack("!BBH4s", icmp_type, 1, 0, socket.inet_aton(src))


def _ipv6(src: str, nxt: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nxt, 255) + socket.inet_pton(
        socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "ff02::1") + payload


def frames(mac: str, ipv4: str) -> dict:
    """What a rogue DHCP server and router sends, as whole Ethernet frames from `mac`."""
    src = bytes.fromhex(mac.replace(":", ""))
    bcast, allnodes = b"\xff" * 6 + src + b"\x08\x00", b"\x33\x33\0\0\0\x01" + src + b"\x86\xdd"
    ll = rules.link_local(mac)
    udp6 = struct.pack("!HHHH", 547, 546, 8, 0)
    return {
        "dhcp": bcast + _ipv4_udp(ipv4, "255.255.255.255", 67, 68),
        "dhcp-tagged": b"\xff" * 6 + src + b"\x81\x00\x00\x01\x08\x00"
        + _ipv4_udp(ipv4, "255.255.255.255", 67, 68),
        "dhcpv6": allnodes + _ipv6(ll, 17, udp6),
        "ra": allnodes + _ipv6(ll, 58, struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)),
        "redirect": allnodes + _ipv6(ll, 58, struct.pack("!BBHI", 137, 0, 0, 0) + bytes(32)),
        "redirect4": bcast + _ipv4_icmp(ipv4, "255.255.255.255", 5),
    }


SEND = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for frame in sys.argv[1:]:
    s.send(bytes.fromhex(frame))
"""
# Counts, after our chains (priority -200), what passed them; `vlan id 1` for the tagged one.
PROBE = """table bridge probe {{
 chain c {{ type filter hook prerouting priority 0;
{rules} }}
}}
"""
MATCH = {"dhcp": "ether type ip udp sport 67 udp dport 68",
         "dhcp-tagged": "vlan id 1 udp sport 67 udp dport 68",
         "dhcpv6": "udp sport 547 udp dport 546", "ra": "icmpv6 type nd-router-advert",
         "redirect": "icmpv6 type nd-redirect", "redirect4": "icmp type redirect"}


@pytest.mark.slow
def test_server_frames_pass_from_the_declared_port_only(host, tmp_path):
    desc = describe(tmp_path, PORTS.format(server="true") + ANY)
    host.lxembed("net", "up", str(desc))
    senders = {"g-srv": ("02:00:00:91:00:02", "10.91.0.2"),
               "g-cli": ("02:00:00:91:00:03", "0.0.0.0"),
               "g-any": ("02:00:00:91:00:04", "10.91.0.4")}
    probe = "".join(f'  iifname "{port}" {match} counter comment "{port} {kind}"\n'
                    for port in senders for kind, match in MATCH.items())
    host.run("nft", "-f", "-", input=PROBE.format(rules=probe))

    def send_all() -> dict:
        for port, (mac, ipv4) in senders.items():
            hexed = [f.hex() for f in frames(mac, ipv4).values()]
            host.ns(port, sys.executable, "-c", SEND, *hexed)
        listed = host.run("nft", "list", "table", "bridge", "probe").stdout
        return {line.split('comment "')[1].rstrip('"'):
                int(line.split("counter packets ")[1].split()[0])
                for line in listed.splitlines() if "counter packets" in line}

    # The server's pass (its VLAN-tagged one drops: anti-spoofing lets no tag through); from
    # the others, tagged or not, none does.
    expected = {f"{port} {kind}": int(port == "g-srv" and kind != "dhcp-tagged")
                for port in senders for kind in MATCH}
    assert send_all() == expected
    # Without lxembed's table every frame passes: the probe sees them all, the guard made the
    # difference.
    host.run("nft", "delete", "table", "bridge", "lxembed_guard")
    assert send_all() == {name: n + 1 for name, n in expected.items()}
    host.run("nft", "delete", "table", "bridge", "probe")
    host.lxembed("net", "down", str(desc))
