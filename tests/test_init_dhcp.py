"""The Python init's own DHCP client against a real dnsmasq, the init as PID 1 of a network
namespace of a throwaway host (net_helpers): the lease at start (address with the lease's
lifetime, default route, resolv.conf, the hostname given to the server), renewals at T1 from
the supervisor's loop, a NAK that sends it back to DISCOVER for a new address, a server that
only answers late (dnsmasq's ping check: the same search must take a late OFFER), and a lease
that runs out while its server is away (busybox udhcpd: dropped, then taken again).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from init_helpers import NamespaceInit, can_unshare
from net_helpers import host_namespace

pytestmark = pytest.mark.skipif(not can_unshare(), reason="needs root and unshare")

SERVER = "10.71.0.1"


@pytest.fixture
def lan(tmp_path):
    """A host namespace holding netns `srv` (veth0, SERVER/24) and `cli` (eth0, no address)."""
    with host_namespace(tmp_path / "host") as host:
        host.run("ip", "netns", "add", "srv")
        host.run("ip", "netns", "add", "cli")
        host.run("ip", "link", "add", "veth0", "netns", "srv", "type", "veth",
                 "peer", "name", "eth0", "netns", "cli")
        host.ns("srv", "ip", "addr", "add", SERVER + "/24", "dev", "veth0")
        host.ns("srv", "ip", "link", "set", "veth0", "up")
        yield host


def dnsmasq(host, tmp_path, first: int, *extra: str):
    """dnsmasq on veth0 handing out .FIRST-.FIRST+9 for 2 min (its least), T1 3 s, T2 5 s."""
    log = tmp_path / f"dnsmasq-{first}.log"
    base = SERVER.rsplit(".", 1)[0]
    proc = host.popen(
        "ip", "netns", "exec", "srv", "dnsmasq", "--no-daemon", "--port=0", "--log-dhcp",
        "--interface=veth0", "--bind-interfaces", f"--log-facility={log}",
        f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
        f"--dhcp-range={base}.{first},{base}.{first + 9},2m",
        f"--dhcp-option=option:router,{SERVER}", f"--dhcp-option=option:dns-server,{SERVER}",
        "--dhcp-option=option:domain-name,lan", "--dhcp-option=option:T1,3",
        "--dhcp-option=option:T2,5", *extra)
    deadline = time.monotonic() + 10
    while not (log.exists() and "started" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    return proc, log


class LanInit(NamespaceInit):
    """The init as PID 1 in netns `cli` of the throwaway host."""

    def __init__(self, host, tmp, config, **kwargs):
        self.prefix = (["nsenter", "-t", str(host.pid), "-n", "-m", "--", "ip", "netns", "exec",
                        "cli"] + [a for a in NamespaceInit.prefix if a != "--net"])
        super().__init__(tmp, config, **kwargs)


def config(tmp_path, seconds: float) -> dict:
    """eth0 by DHCP, resolv.conf in tmp_path; the main service ends the init after `seconds`."""
    return {"hostname": "box",
            "network": {"interfaces": [{"name": "eth0", "dhcp": True}],
                        "resolv_conf": str(tmp_path / "resolv.conf")},
            "services": [{"name": "app", "command": ["sleep", str(seconds)], "main": True}]}


def addresses(host) -> list:
    out = json.loads(host.ns("cli", "ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
    return out[0]["addr_info"] if out else []  # no IPv4 address: ip lists no interface


@pytest.mark.slow
def test_lease_route_resolv_conf_and_renewals(lan, tmp_path):
    server, log = dnsmasq(lan, tmp_path, 50, "--no-ping")
    init = LanInit(lan, tmp_path, config(tmp_path, 8), env={"container": "oci"})
    assert init.wait(30) == 0, init.console()
    out = init.console()
    # The lease before any service: the service starts only after it.
    m = re.search(r"lxembed-init: eth0: lease of (10\.71\.0\.5\d)/24 from 10\.71\.0\.1, "
                  r"router 10\.71\.0\.1, dns 10\.71\.0\.1, 120 s", out)
    assert m, out
    assert out.index(m.group(0)) < out.index("ready")
    # T1 is 3 s: renewed (unicast to the server, the same address) at least twice in 8 s.
    assert out.count(f"eth0: lease renewed: {m.group(1)}/24") >= 2, out
    served = log.read_text()
    assert "client provides name: box" in served
    assert served.count("DHCPACK(veth0)") >= 3
    assert (tmp_path / "resolv.conf").read_text() == "search lan\nnameserver 10.71.0.1\n"
    # The kernel holds the address with the lease's lifetime (renewed: near 120 s again).
    addr = [a for a in addresses(lan) if a["local"] == m.group(1)]
    assert addr and addr[0]["prefixlen"] == 24 and addr[0]["broadcast"] == "10.71.0.255"
    assert 100 <= addr[0]["valid_life_time"] <= 120, addr
    routes = json.loads(lan.ns("cli", "ip", "-j", "-4", "route", "show", "default").stdout)
    assert routes == [{"dst": "default", "gateway": SERVER, "dev": "eth0", "protocol": "dhcp",
                       "flags": []}]
    server.kill()


@pytest.mark.slow
def test_nak_on_renewal_takes_a_new_address(lan, tmp_path):
    first, _ = dnsmasq(lan, tmp_path, 50, "--no-ping")
    init = LanInit(lan, tmp_path, config(tmp_path, 9), env={"container": "oci"})
    init.wait_console("eth0: lease of 10.71.0.5", 15)
    first.kill()
    first.wait()
    # The server now hands out .80-.89 only and is authoritative: the renewal at T1 is NAKed.
    second, log = dnsmasq(lan, tmp_path, 80, "--no-ping", "--dhcp-authoritative")
    assert init.wait(30) == 0, init.console()
    out = init.console()
    assert "eth0: the DHCP server refused the lease (NAK): asking again" in out
    assert re.search(r"eth0: lease of 10\.71\.0\.8\d/24 from 10\.71\.0\.1", out), out
    assert "DHCPNAK(veth0)" in log.read_text()
    # The refused address went with it: only the new one is left.
    assert [a["local"][:-1] for a in addresses(lan)] == ["10.71.0.8"]
    second.kill()


@pytest.mark.slow
def test_a_late_offer_is_taken(lan, tmp_path):
    """dnsmasq pings an address before it offers it, ~3 s: the OFFER answers the first
    DISCOVER after two more went out. All three belong to one search (one transaction id)."""
    server, log = dnsmasq(lan, tmp_path, 60)
    init = LanInit(lan, tmp_path, config(tmp_path, 0), env={"container": "oci"})
    assert init.wait(30) == 0, init.console()
    out = init.console()
    assert re.search(r"eth0: lease of 10\.71\.0\.6\d/24", out), out
    assert "no DHCP lease yet" not in out
    xids = set(re.findall(r"(\d+) DHCPDISCOVER", log.read_text()))
    assert len(xids) == 1, log.read_text()
    server.kill()


@pytest.mark.slow
def test_a_lease_that_runs_out_is_dropped_and_taken_again(lan, tmp_path):
    """busybox udhcpd with an 8 s lease (dnsmasq's least is 2 min): the server goes away, the
    renewal (T1 4 s) and the rebinding (T2 7 s) go unanswered, the kernel drops the address at
    8 s and the init says so and asks again; the server comes back and the device has a lease."""
    conf = tmp_path / "udhcpd.conf"
    conf.write_text(f"start 10.71.0.20\nend 10.71.0.29\ninterface veth0\n"
                    f"lease_file {tmp_path / 'udhcpd.leases'}\npidfile {tmp_path / 'udhcpd.pid'}\n"
                    f"opt subnet 255.255.255.0\nopt router {SERVER}\nopt lease 8\n")

    def udhcpd():
        return lan.popen("ip", "netns", "exec", "srv", "busybox", "udhcpd", "-f", str(conf))

    server = udhcpd()
    init = LanInit(lan, tmp_path, config(tmp_path, 22), env={"container": "oci"})
    out = init.wait_console("eth0: lease of 10.71.0.2", 15)
    taken = time.monotonic()
    server.kill()
    server.wait()
    init.wait_console("eth0: the lease of 10.71.0.2", 15)  # "... ran out: asking again"
    assert time.monotonic() - taken >= 6, init.console()  # not before its end (8 s)
    assert addresses(lan) == [], addresses(lan)  # gone with the lease
    server = udhcpd()
    assert init.wait(40) == 0, init.console()
    out = init.console()
    assert re.search(r"ran out: asking again\n(.*\n)*lxembed-init: eth0: lease of "
                     r"10\.71\.0\.2\d/24 from 10\.71\.0\.1", out), out
    assert [a["local"][:-1] for a in addresses(lan)] == ["10.71.0.2"]
    server.kill()
