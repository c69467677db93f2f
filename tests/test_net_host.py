"""`lxembed net up/down` for real, in a throwaway host namespace (see net_helpers): the demo
topology, anti-spoofing, DHCP through the filter, isolation, inbound ports, the macvlan shim,
idempotence, rollback and an exact `down`. Traffic only flows between namespaces the test made.
Tests over ~3 s (most: every `lxembed` run is a fresh Python with pyroute2) are marked slow.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from net_helpers import host_namespace

DEMO = str(Path(__file__).resolve().parents[1] / "examples" / "net-demo.toml")
UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc calls this with $1 = deconfig|bound|renew; apply the lease
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew) ip addr add "$ip/${mask:-24}" dev "$interface"
               [ -n "$router" ] && ip route replace default via "${router%% *}" ;;
esac
"""


@pytest.fixture
def host(tmp_path):
    with host_namespace(tmp_path) as h:
        yield h


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def link(h, name: str, netns: str = None) -> dict:
    cmd = ["ip", "-j", "-d", "link", "show", name]
    out = h.ns(netns, *cmd) if netns else h.run(*cmd)
    return json.loads(out.stdout)[0]


@pytest.mark.slow
def test_demo_up_pings_with_declared_names_and_macs(host):
    before = host.settled()
    out = host.lxembed("net", "up", DEMO)
    assert "44 rules" in out.stdout
    for port, mac, peer_mac in (("vh-a", "02:00:00:77:01:0a", "02:00:00:77:00:0a"),
                                ("vh-b", "02:00:00:77:01:0b", "02:00:00:77:00:0b"),
                                ("vh-c", "02:00:00:77:01:0c", "02:00:00:77:00:0c")):
        info = link(host, port)
        assert info["address"] == mac and info["master"] == "lxebr0"
        assert info["linkinfo"]["info_kind"] == "veth"
        assert link(host, "eth0", "lxe-" + port[-1])["address"] == peer_mac
    assert host.ping("lxe-a", "10.77.0.11") and host.ping("lxe-b", "10.77.0.10")
    assert host.ping("lxe-a", "10.77.0.1")  # the bridge address is the gateway
    route = host.ns("lxe-a", "ip", "-j", "route", "show", "default").stdout
    assert json.loads(route)[0]["gateway"] == "10.77.0.1"
    shown = json.loads(host.lxembed("net", "show", "--json", DEMO).stdout)
    assert shown["up"] and shown["rules"]["count"] == 44
    assert {r["name"] for r in shown["links"] if r["netns"] is None} >= {"lxebr0", "vh-a", "mvh0"}
    assert host.lxembed("net", "check", DEMO).stdout.endswith("in force\n")
    host.lxembed("net", "down", DEMO)
    assert host.settled() == before
    assert host.processes() == []  # dnsmasq stopped


@pytest.mark.slow
def test_spoofing_ports_lose_connectivity_while_declared_ones_keep_it(host):
    host.lxembed("net", "up", DEMO)
    assert host.ping("lxe-a", "10.77.0.11")
    # an undeclared source address: dropped; the declared one on the same port still works
    host.ns("lxe-a", "ip", "addr", "add", "10.77.0.99/24", "dev", "eth0")
    assert not host.ping("lxe-a", "10.77.0.11", "-I", "10.77.0.99", wait=0.5)
    assert host.ping("lxe-a", "10.77.0.11", "-I", "10.77.0.10")
    # ARP naming an undeclared sender address gets no answer; the declared one does
    arping = ["busybox", "arping", "-c", "1", "-w", "1", "-I", "eth0"]
    assert host.ns("lxe-a", *arping, "-s", "10.77.0.99", "10.77.0.11", check=False).returncode
    assert host.ns("lxe-a", *arping, "-s", "10.77.0.10", "10.77.0.11").returncode == 0
    # a changed MAC: cut off; lxe-b keeps talking to the host; the declared MAC comes back
    host.ns("lxe-a", "ip", "link", "set", "eth0", "address", "02:00:00:77:00:99")
    host.ns("lxe-b", "ip", "neigh", "flush", "all")
    assert not host.ping("lxe-a", "10.77.0.11", wait=0.5)
    assert host.ping("lxe-b", "10.77.0.1")
    host.ns("lxe-a", "ip", "link", "set", "eth0", "address", "02:00:00:77:00:0a")
    assert host.ping("lxe-a", "10.77.0.11")
    check = host.lxembed("net", "check", DEMO, check=False)  # the host side did not drift
    assert check.returncode == 0, check.stdout


def test_dhcp_client_gets_its_static_lease_through_the_filter(host, tmp_path):
    script = write(tmp_path, "udhcpc.sh", UDHCPC_SCRIPT)
    Path(script).chmod(0o755)
    host.lxembed("net", "up", DEMO)
    out = host.ns("lxe-c", "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1",
                  "-s", script, timeout=30)
    assert "10.77.0.12" in out.stdout + out.stderr
    addr = json.loads(host.ns("lxe-c", "ip", "-j", "addr", "show", "eth0").stdout)[0]
    assert "10.77.0.12" in [a["local"] for a in addr["addr_info"]]
    assert host.ping("lxe-c", "10.77.0.10")  # the leased address is an allowed source
    leases = json.loads(host.lxembed("net", "show", "--json", DEMO).stdout)["leases"]
    assert leases["lxebr0"][0]["mac"] == "02:00:00:77:00:0c"
    assert leases["lxebr0"][0]["ip"] == "10.77.0.12"


DHCP_IN_A_CONTAINER = """
[[bridge]]
name = "dbr0"
addresses = ["10.79.0.1/24"]

[[port]]
name = "d-srv"
bridge = "dbr0"
netns = "d-srv"
addresses = ["10.79.0.2/24"]
dhcp_server = true              # its answers cross the bridge (test_net_dhcpguard.py)

[[port]]
name = "d-cli"
bridge = "dbr0"
netns = "d-cli"
peer_hwaddr = "02:00:00:79:00:03"
allowed_ips = ["10.79.0.50"]
"""


@pytest.mark.slow
def test_dhcp_server_in_another_container_answers_a_filtered_port(host, tmp_path):
    """Incus lets a filtered port's DISCOVER reach the host only; here it crosses the bridge."""
    desc = write(tmp_path, "dhcp.toml", DHCP_IN_A_CONTAINER)
    script = write(tmp_path, "udhcpc.sh", UDHCPC_SCRIPT)
    Path(script).chmod(0o755)
    host.lxembed("net", "up", desc)
    server = host.popen("ip", "netns", "exec", "d-srv", "dnsmasq", "--conf-file=/dev/null",
                        "--keep-in-foreground", "--port=0", "--bind-interfaces",
                        "--interface=eth0", "--dhcp-range=10.79.0.50,10.79.0.50,1h",
                        f"--dhcp-leasefile={tmp_path}/srv.leases", "--user=root")
    try:
        time.sleep(0.3)
        out = host.ns("d-cli", "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T",
                      "1", "-s", script, timeout=30)
        assert "10.79.0.50" in out.stdout + out.stderr
        assert host.ping("d-cli", "10.79.0.2")
    finally:
        server.terminate()
        server.wait()
    host.lxembed("net", "down", desc)


ISOLATED = """
[[bridge]]
name = "ibr0"
addresses = ["10.80.0.1/24"]
""" + "".join(f"""
[[port]]
name = "i-{n}"
bridge = "ibr0"
netns = "i-{n}"
addresses = ["10.80.0.{n}/24"]
isolated = {'true' if n < 3 else 'false'}
""" for n in (1, 2, 3))


@pytest.mark.slow
def test_isolated_ports_reach_the_host_not_each_other(host, tmp_path):
    desc = write(tmp_path, "iso.toml", ISOLATED)
    host.lxembed("net", "up", desc)
    assert "isolated on" in host.run("ip", "-d", "link", "show", "i-1").stdout
    assert host.ping("i-1", "10.80.0.1") and host.ping("i-2", "10.80.0.1")
    assert not host.ping("i-1", "10.80.0.2", wait=0.5)
    assert host.ping("i-1", "10.80.0.3") and host.ping("i-2", "10.80.0.3")  # not isolated
    host.lxembed("net", "down", desc)


@pytest.mark.slow
def test_inbound_filter_opens_8080_not_8081(host):
    host.lxembed("net", "up", DEMO)
    servers = [host.popen("ip", "netns", "exec", "lxe-b", "busybox", "nc", "-ll", "-p", str(p),
                          "-e", "echo", "hello") for p in (8080, 8081)]
    try:
        time.sleep(0.3)
        probe = ["busybox", "nc", "-w", "1"]
        # both listen: from inside lxe-b, both answer
        for port in ("8080", "8081"):
            assert "hello" in host.ns("lxe-b", *probe, "127.0.0.1", port, check=False).stdout
        assert "hello" in host.run(*probe, "10.77.0.11", "8080", check=False).stdout
        assert "hello" not in host.run(*probe, "10.77.0.11", "8081", check=False).stdout
        assert "hello" not in host.ns("lxe-a", *probe, "10.77.0.11", "8081", check=False).stdout
        assert host.ping("", "10.77.0.11")  # ICMP passes
    finally:
        for s in servers:
            s.kill()
            s.wait()


@pytest.mark.slow
def test_macvlan_host_reaches_the_namespace_only_through_the_shim(host):
    host.lxembed("net", "up", DEMO)
    assert host.ping("", "10.78.0.10") and host.ping("lxe-m", "10.78.0.1")
    route = json.loads(host.run("ip", "-j", "route", "get", "10.78.0.10").stdout)[0]
    assert route["dev"] == "mvh0"
    host.run("ip", "link", "set", "mvh0", "down")
    assert not host.ping("", "10.78.0.10", wait=0.5)
    assert not host.ping("", "10.78.0.10", "-I", "vp0", wait=0.5)  # the parent is no way in
    check = host.lxembed("net", "check", DEMO, check=False)
    assert check.returncode == 1 and "mvh0: down" in check.stdout
    host.lxembed("net", "up", DEMO)  # brings the declared state back
    assert host.ping("", "10.78.0.10")


@pytest.mark.slow
def test_up_twice_changes_nothing(host):
    host.lxembed("net", "up", DEMO)
    first = host.settled()
    again = host.lxembed("net", "up", DEMO)
    assert "created nothing new" in again.stdout and "(unchanged)" in again.stdout
    assert host.settled() == first
    assert len(host.processes()) == 1  # one dnsmasq, not restarted


@pytest.mark.slow
def test_failure_part_way_leaves_nothing_behind(host):
    # A bridge named like the third port: `up` makes netns, the bridge, vh-a and vh-b, then
    # stops at vh-c and must remove all of it.
    host.run("ip", "link", "add", "vh-c", "type", "bridge")
    before = host.settled()
    out = host.lxembed("net", "up", DEMO, check=False)
    assert out.returncode == 2
    assert "port vh-c" in out.stderr and "is a bridge, not a veth" in out.stderr
    assert "link vh-a" in out.stderr  # names what it removed
    assert host.settled() == before
    assert not (host.state / "net" / "net-demo.json").exists()


def test_failure_after_the_rules_removes_rules_and_links(host, tmp_path):
    # dnsmasq is the last step: a socket already holding UDP 67 makes it fail for real.
    blocker = host.popen(shutil.which("python3"), "-c", "import socket, time; "
                         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                         "s.bind(('0.0.0.0', 67)); print('bound', flush=True); time.sleep(60)")
    try:
        assert blocker.stdout.readline().strip() == "bound"
        before = host.settled()
        out = host.lxembed("net", "up", DEMO, check=False)
        assert out.returncode == 2 and "dnsmasq on lxebr0" in out.stderr, out.stderr
        assert "tables nft" in out.stderr
        assert host.settled() == before
    finally:
        blocker.kill()
        blocker.wait()


@pytest.mark.slow
def test_check_lists_drift_and_show_prints_a_table(host):
    host.lxembed("net", "up", DEMO)
    host.run("ip", "link", "set", "vh-a", "address", "02:00:00:77:01:99")
    host.run("nft", "add", "rule", "bridge", "lxembed_net_demo", "from_vh_b", "drop")
    out = host.lxembed("net", "check", DEMO, check=False)
    assert out.returncode == 1
    assert "vh-a: MAC 02:00:00:77:01:99, declared 02:00:00:77:01:0a" in out.stdout
    assert "table bridge lxembed_net_demo: changed since `net up`" in out.stdout
    table = host.lxembed("net", "show", DEMO).stdout
    assert "vh-b" in table and "lxebr0" in table and "leases on lxebr0" in table


@pytest.mark.slow
def test_down_keeps_a_bridge_it_did_not_make(host, tmp_path):
    # A bridge that was there with a port of its own (a bridge without ports changes carrier
    # and MAC as any port comes and goes: the kernel's doing, not restorable).
    host.run("ip", "link", "add", "kbr0", "type", "bridge")
    host.run("ip", "link", "add", "k-up", "master", "kbr0", "type", "veth", "peer", "k-up1")
    for name in ("kbr0", "k-up", "k-up1"):
        host.run("ip", "link", "set", name, "up")
    desc = write(tmp_path, "keep.toml", '[[bridge]]\nname = "kbr0"\naddresses = ["10.81.0.1/24"]'
                 '\n\n[[port]]\nname = "k-1"\nbridge = "kbr0"\nnetns = "k-1"\n'
                 'addresses = ["10.81.0.2/24"]\n')
    before = host.settled()
    host.lxembed("net", "up", desc)
    assert host.ping("k-1", "10.81.0.1")
    host.lxembed("net", "down", desc)
    assert host.settled() == before  # kbr0 still there, without 10.81.0.1


def test_vlan_needs_8021q(host, tmp_path):
    host.run("ip", "link", "add", "vl-p", "type", "veth", "peer", "name", "vl-q")
    desc = write(tmp_path, "vlan.toml", '[[vlan]]\nname = "vl-p.10"\nparent = "vl-p"\nid = 10\n'
                 'addresses = ["10.82.0.1/24"]\n')
    out = host.lxembed("net", "up", desc, check=False)
    if "no VLAN support (8021q)" in out.stderr:
        pytest.skip("this kernel has no 8021q: the VLAN path is tested in a qemu-system guest")
    assert out.returncode == 0, out.stderr
    assert link(host, "vl-p.10")["linkinfo"]["info_data"]["id"] == 10
    host.lxembed("net", "down", desc)


LXC_PORT = """
[[bridge]]
name = "hbr0"
addresses = ["10.83.0.1/24"]

[[port]]
name = "h-ct"
hwaddr = "02:00:00:83:01:01"
bridge = "hbr0"
peer_hwaddr = "02:00:00:83:00:01"
addresses = ["10.83.0.2/24"]
created_by = "lxc"
isolated = true
"""


def test_lxc_hook_scripts_set_the_mac_and_own_a_table(host, tmp_path):
    """The scripts alone (the real-LXC run is in test_net_lxc.py): LXC's veth is played by one
    made with `ip`, with a random MAC, as LXC makes it."""
    desc = write(tmp_path, "hooks.toml", LXC_PORT)
    host.lxembed("net", "up", desc)  # the bridge; the port is left to LXC
    assert "h-ct" not in host.run("ip", "-br", "link").stdout
    lines = host.lxembed("net", "lxc-hooks", desc, "h-ct", "--dir", str(tmp_path / "hooks"))
    keys = dict(line.split(" = ") for line in lines.stdout.splitlines())
    host.run("ip", "link", "add", "h-ct", "master", "hbr0", "type", "veth", "peer", "h-ctp")
    host.run(keys["lxc.hook.start-host"], "ct", "lxc", "start-host")
    info = link(host, "h-ct")
    assert info["address"] == "02:00:00:83:01:01"
    assert info["linkinfo"]["info_slave_data"]["isolated"] is True
    table = host.run("nft", "list", "table", "bridge", "lxembed_port_h_ct").stdout
    assert 'iifname vmap { "h-ct" : jump from_h_ct }' in table
    host.run(keys["lxc.hook.start-host"], "ct", "lxc", "start-host")  # a restart: same state
    host.run("ip", "link", "del", "h-ct")
    host.run(keys["lxc.hook.post-stop"], "ct", "lxc", "post-stop")
    assert "lxembed_port_h_ct" not in host.run("nft", "list", "tables").stdout
    host.run(keys["lxc.hook.post-stop"], "ct", "lxc", "post-stop")  # twice is fine
    host.lxembed("net", "down", desc)


PHYS_AND_NAT = """
[[bridge]]
name = "nbr0"
addresses = ["10.84.0.1/24"]

[[port]]
name = "n-1"
bridge = "nbr0"
netns = "n-1"
addresses = ["10.84.0.2/24"]

[[phys]]
name = "uplink0"        # stands in for a NIC: a veth end the test made, not on a bridge
bridge = "nbr0"

[[phys]]
name = "nic1"
netns = "n-1"

[[nat]]
bridge = "nbr0"
uplink = "wan0"
"""


@pytest.mark.slow
def test_phys_handover_and_nat_are_undone_by_down(host, tmp_path):
    # uplink0 is up, as a NIC in use is (one never up has qdisc noop; after its first up the
    # kernel keeps noqueue, so "down again" could not compare equal)
    host.run("ip", "link", "add", "uplink0", "type", "veth", "peer", "uplink1")
    host.run("ip", "link", "set", "uplink0", "up")
    host.run("ip", "link", "add", "nic1", "type", "veth", "peer", "nic2")
    # the "internet": a namespace behind wan0 that has no route back to 10.84.0.0/24
    host.run("ip", "netns", "add", "wan")
    host.run("ip", "link", "add", "wan0", "type", "veth", "peer", "eth0", "netns", "wan")
    host.run("ip", "addr", "add", "192.168.99.1/24", "dev", "wan0")
    host.run("ip", "link", "set", "wan0", "up")
    host.ns("wan", "ip", "addr", "add", "192.168.99.2/24", "dev", "eth0")
    host.ns("wan", "ip", "link", "set", "eth0", "up")
    before = host.settled()
    forward = host.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout
    desc = write(tmp_path, "phys.toml", PHYS_AND_NAT)
    host.lxembed("net", "up", desc)
    assert link(host, "uplink0")["master"] == "nbr0"
    assert "nic1" in host.ns("n-1", "ip", "-br", "link").stdout
    assert host.ping("n-1", "192.168.99.2")  # masqueraded: wan has no route back otherwise
    host.lxembed("net", "down", desc)
    assert host.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout == forward
    assert host.settled() == before  # uplink0 unbridged, nic1 back on the host


IPV6 = """
[[bridge]]
name = "sbr0"
addresses = ["10.86.0.1/24", "fd86::1/64"]

[[port]]
name = "s-1"
bridge = "sbr0"
netns = "s-1"
peer_hwaddr = "02:00:00:86:00:01"
addresses = ["10.86.0.2/24", "fd86::2/64"]
"""

SEND_NA = """
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.bind(("fd86::2", 0))
na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + socket.inet_pton(socket.AF_INET6, sys.argv[1])
s.sendto(na, ("ff02::1", 0, 0, socket.if_nametoindex("eth0")))
"""


@pytest.mark.slow
def test_ipv6_sources_are_filtered_like_ipv4(host, tmp_path):
    desc = write(tmp_path, "v6.toml", IPV6)
    host.lxembed("net", "up", desc)
    host.ns("s-1", "ip", "addr", "add", "fd86::99/64", "dev", "eth0", "nodad")
    end = time.monotonic() + 5  # duplicate address detection holds fd86::2 for ~1 s
    while not host.ping("s-1", "fd86::1", "-I", "fd86::2", wait=0.5):
        assert time.monotonic() < end, "fd86::1 unreachable from the declared fd86::2"
    assert not host.ping("s-1", "fd86::1", "-I", "fd86::99", wait=0.5)
    # Neighbour advertisements: a later chain counts what passed ours (priority -200).
    host.run("nft", "-f", "-", input="table bridge probe {\n chain c { type filter hook "
             "prerouting priority 0;\n icmpv6 type nd-neighbor-advert counter\n }\n}\n")
    for target, passed in (("fd86::77", 0), ("fd86::2", 1)):  # undeclared, then declared
        host.ns("s-1", sys.executable, "-c", SEND_NA, target)
        counted = host.run("nft", "list", "table", "bridge", "probe").stdout
        assert f"counter packets {passed} " in counted, (target, counted)
    host.run("nft", "delete", "table", "bridge", "probe")
    host.run("nft", "delete", "table", "bridge", "lxembed_v6")  # the filter made the difference
    assert host.ping("s-1", "fd86::1", "-I", "fd86::99")
    host.lxembed("net", "down", desc)


def test_vlan_filtering_unsupported_is_named(host, tmp_path):
    desc = write(tmp_path, "vf.toml", '[[bridge]]\nname = "vbr0"\nvlan_filtering = true\n')
    out = host.lxembed("net", "up", desc, check=False)
    if out.returncode == 0:
        host.lxembed("net", "down", desc)
        pytest.skip("this kernel has bridge VLAN filtering")
    assert "bridge vbr0: the kernel has no bridge VLAN filtering" in out.stderr


SEND_FRAMES = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
dst, src = b"\\xff" * 6, bytes.fromhex("020000860001")  # the port's own, declared MAC
ipv4 = bytes.fromhex("4500001c0000000040110000") + bytes([10, 86, 0, 2, 10, 86, 0, 1]) + bytes(8)
s.send(dst + src + bytes.fromhex("8100000a0800") + ipv4)  # VLAN 10 tag around IPv4
s.send(dst + src + bytes.fromhex("88b5") + bytes(46))      # a local experimental ethertype
"""


@pytest.mark.slow
def test_other_ethertypes_and_vlan_tags_are_dropped(host, tmp_path):
    desc = write(tmp_path, "v6.toml", IPV6)
    host.lxembed("net", "up", desc)
    host.run("nft", "-f", "-", input="table bridge probe {\n chain c { type filter hook "
             "prerouting priority 0;\n iifname \"s-1\" ether type vlan counter\n"
             " iifname \"s-1\" ether type 0x88b5 counter\n }\n}\n")
    host.ns("s-1", sys.executable, "-c", SEND_FRAMES)
    counted = host.run("nft", "list", "table", "bridge", "probe").stdout
    assert counted.count("counter packets 0 ") == 2, counted
    host.run("nft", "delete", "table", "bridge", "lxembed_v6")  # without the filter: both pass
    host.ns("s-1", sys.executable, "-c", SEND_FRAMES)
    counted = host.run("nft", "list", "table", "bridge", "probe").stdout
    assert counted.count("counter packets 1 ") == 2, counted
    host.run("nft", "delete", "table", "bridge", "probe")
    host.lxembed("net", "down", desc)


@pytest.mark.slow
def test_down_restores_a_namespace_it_did_not_make(host, tmp_path):
    host.run("ip", "netns", "add", "k-1")  # there before: `down` must leave it as it was
    desc = write(tmp_path, "ns.toml", '[[bridge]]\nname = "kbr1"\naddresses = ["10.87.0.1/24"]'
                 '\n\n[[port]]\nname = "k-1"\nbridge = "kbr1"\nnetns = "k-1"\n'
                 'addresses = ["10.87.0.2/24"]\n')
    def inside():  # the kernel gives lo a qdisc at its first up and keeps it: not compared
        links = json.loads(host.ns("k-1", "ip", "-j", "-d", "link").stdout)
        return [{k: v for k, v in link.items() if k != "qdisc"} for link in links]

    before = inside()
    assert "UP" not in before[0]["flags"]
    host.lxembed("net", "up", desc)
    assert host.ping("k-1", "10.87.0.1")
    host.lxembed("net", "down", desc)
    assert inside() == before  # lo down again, the peer gone
    assert "k-1" in host.run("ip", "netns", "list").stdout


@pytest.mark.slow
def test_up_with_a_smaller_description_removes_what_it_no_longer_declares(host, tmp_path):
    before = host.settled()
    host.lxembed("net", "up", DEMO)
    text = Path(DEMO).read_text()
    smaller = text[:text.index("[[port]]\nname = \"vh-c\"")]  # no vh-c, no macvlan part
    desc = write(tmp_path, "net-demo.toml", smaller)
    out = host.lxembed("net", "up", desc)
    assert "removed" in out.stdout and "link vh-c" in out.stdout and "netns lxe-m" in out.stdout
    links = host.run("ip", "-br", "link").stdout
    assert "vh-a" in links and "vh-c" not in links and "mvh0" not in links and "vp0" not in links
    assert host.lxembed("net", "check", desc).returncode == 0
    assert host.ping("lxe-a", "10.77.0.11")
    host.lxembed("net", "down", desc)
    assert host.settled() == before
