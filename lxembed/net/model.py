"""The NetworkModel: a host network description read from TOML and checked across its keys.

One model drives `lxembed net up/down/check`, the nftables rules, dnsmasq and the LXC hooks,
so names, MACs and addresses are written once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config.network_schema import NETWORK_DESCRIPTION_SETTINGS
from ..config.settings import validate
from ..config.toml_lines import key_line, parse
from ..errors import UserError
from .mac import IFNAMSIZ, check_mac, stable_mac

RECIPE_TABLE = "host_network"  # the description's table inside a recipe
_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class Dhcp:
    first: str
    last: str
    netmask: str
    lease_time: str
    static: Dict[str, str]  # MAC -> IPv4
    dns: bool


@dataclass
class Bridge:
    name: str
    hwaddr: str
    addresses: List[str]
    stp: bool
    forward_delay: int
    vlan_filtering: bool
    mtu: Optional[int]
    dhcp: Optional[Dhcp]
    host_tcp: Optional[List[int]]
    host_udp: Optional[List[int]]

    def ipv4(self) -> List[ipaddress.IPv4Interface]:
        return [i for i in map(ipaddress.ip_interface, self.addresses) if i.version == 4]


@dataclass
class Port:
    name: str
    hwaddr: str
    bridge: str
    peer: str
    peer_hwaddr: str
    netns: Optional[str]
    created_by: str
    addresses: List[str]
    gateway: Optional[str]
    anti_spoofing: bool
    allowed_macs: List[str]
    allowed_ips: List[str]  # addresses and subnets, static leases included
    isolated: bool
    inbound_tcp: Optional[List[int]]
    inbound_udp: Optional[List[int]]
    vlan: Optional[int] = None  # untagged member (PVID) of this VLAN on a vlan_filtering bridge
    dhcp_server: bool = False  # may send DHCP/DHCPv6 answers, router adverts and redirects


@dataclass
class Veth:
    name: str
    peer: str
    hwaddr: str
    peer_hwaddr: str


@dataclass
class Macvlan:
    name: str
    parent: str
    mode: str
    hwaddr: str
    netns: Optional[str]
    addresses: List[str]
    routes: List[str]
    gateway: Optional[str]


@dataclass
class Vlan:
    name: str
    parent: str
    id: int
    bridge: Optional[str]
    addresses: List[str]


@dataclass
class Phys:
    name: str
    bridge: Optional[str]
    netns: Optional[str]


@dataclass
class Nat:
    bridge: str
    uplink: str


@dataclass
class NetworkModel:
    name: str
    path: Path
    bridges: List[Bridge] = field(default_factory=list)
    ports: List[Port] = field(default_factory=list)
    veths: List[Veth] = field(default_factory=list)
    macvlans: List[Macvlan] = field(default_factory=list)
    vlans: List[Vlan] = field(default_factory=list)
    phys: List[Phys] = field(default_factory=list)
    nat: List[Nat] = field(default_factory=list)

    def bridge(self, name: str) -> Bridge:
        return next(b for b in self.bridges if b.name == name)

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.ports) or "none"
        raise UserError(f"{self.path}: no port {name!r} (ports: {known})")

    def namespaces(self) -> List[str]:
        seen: List[str] = []
        for item in [*self.ports, *self.macvlans, *self.phys]:
            if item.netns and item.netns not in seen:
                seen.append(item.netns)
        return seen

    def host_links(self) -> List[str]:
        """Every interface name the description puts on the host (for host-config)."""
        names = [b.name for b in self.bridges]
        for p in self.ports:
            names.append(p.name)
            if not p.netns and p.created_by == "lxembed":
                names.append(p.peer)
        for v in self.veths:
            names += [v.name, v.peer]
        names += [m.name for m in self.macvlans if not m.netns]
        names += [v.name for v in self.vlans]
        return names


def load_description(path) -> NetworkModel:
    """Read a description file, or the [host_network] table of a recipe."""
    path = Path(path)
    data, text = parse(path)
    table = ""
    if RECIPE_TABLE in data:
        data, table = data[RECIPE_TABLE], RECIPE_TABLE
        if not isinstance(data, dict):
            raise UserError(f"{path}:{key_line(text, '', RECIPE_TABLE)}: {RECIPE_TABLE}: "
                            "expected a table")
    return model_from_table(data, path, text, table)


def model_from_table(data: Dict[str, Any], path: Path, text: str, table: str = "") \
        -> NetworkModel:
    settings = validate(data, NETWORK_DESCRIPTION_SETTINGS, path, text, table)
    return _Reader(settings, path, text, table).model()


class _Reader:
    """Builds the model from validated tables; every error names file:line."""

    def __init__(self, s: Dict[str, Any], path: Path, text: str, table: str):
        self.s, self.path, self.text, self.prefix = s, path, text, table
        self.names: Dict[str, str] = {}  # host interface name -> what declared it
        self.macs: Dict[str, str] = {}

    def fail(self, kind: str, index: int, key: str, message: str) -> UserError:
        table = f"{self.prefix}.{kind}" if self.prefix else kind
        line = key_line(self.text, table, key, index) if kind else key_line(
            self.text, self.prefix, key)
        label = f"[[{kind}]] #{index + 1}: " if kind else ""
        return UserError(f"{self.path}:{line}: {label}{message}")

    def model(self) -> NetworkModel:
        name = self.s["name"] or self.path.stem
        if not _NAME.match(name) or len(name) > 40:
            raise self.fail("", 0, "name", f"name {name!r}: letters, digits, '-' and '_' only")
        m = NetworkModel(name=name, path=self.path)
        m.bridges = [self.bridge(i, b) for i, b in enumerate(self.s["bridge"])]
        m.ports = [self.port(i, p, m) for i, p in enumerate(self.s["port"])]
        m.veths = [self.veth(i, v) for i, v in enumerate(self.s["veth"])]
        m.macvlans = [self.macvlan(i, v) for i, v in enumerate(self.s["macvlan"])]
        m.vlans = [self.vlan(i, v, m) for i, v in enumerate(self.s["vlan"])]
        m.phys = [self.phys(i, v, m) for i, v in enumerate(self.s["phys"])]
        bridges = {b.name for b in m.bridges}
        for i, n in enumerate(self.s["nat"]):
            for key in ("bridge", "uplink"):
                if not n[key]:
                    raise self.fail("nat", i, "", f"needs {key!r}")
            if n["bridge"] not in bridges:
                raise self.fail("nat", i, "bridge", f"bridge {n['bridge']!r} is not declared")
            m.nat.append(Nat(n["bridge"], n["uplink"]))
        for i, v in enumerate(m.macvlans):
            if v.parent in [x.name for x in m.macvlans]:
                raise self.fail("macvlan", i, "parent", "a macvlan cannot be a parent")
        return m

    # -- helpers ---------------------------------------------------------------------------
    def ifname(self, kind: str, i: int, key: str, value: Optional[str], host: bool = True) -> str:
        if not value:
            raise self.fail(kind, i, "", f"needs {key!r}")
        if len(value) > IFNAMSIZ or not _IFNAME.match(value):
            raise self.fail(kind, i, key, f"{value!r} is not an interface name (at most "
                            f"{IFNAMSIZ} characters: letters, digits, '.', '-', '_', '@')")
        if host:
            if value in self.names:
                raise self.fail(kind, i, key, f"{value!r} is already declared by "
                                f"{self.names[value]}")
            self.names[value] = f"[[{kind}]] #{i + 1}"
        return value

    def mac(self, kind: str, i: int, key: str, value: Optional[str], seed: str) -> str:
        if value is None:
            value = stable_mac(f"{self.s['name'] or self.path.stem}:{seed}")
        problem = check_mac(value)
        if problem:
            raise self.fail(kind, i, key, problem)
        value = value.lower()
        if value in self.macs:
            raise self.fail(kind, i, key, f"{value} is already the MAC of {self.macs[value]}")
        self.macs[value] = f"[[{kind}]] #{i + 1} {key}"
        return value

    def addresses(self, kind: str, i: int, key: str, values: List[Any],
                  prefix: bool = True) -> List[str]:
        out = []
        for v in values:
            v = str(v)
            if prefix and "/" not in v:
                raise self.fail(kind, i, key, f"{v!r} has no prefix length (write {v}/24)")
            try:
                out.append(str(ipaddress.ip_interface(v) if prefix else ipaddress.ip_network(
                    v, strict=False)))
            except ValueError as err:
                raise self.fail(kind, i, key, f"{v!r} is not an IP address: {err}") from None
        return out

    def address(self, kind: str, i: int, key: str, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise self.fail(kind, i, key, f"{value!r} is not an IP address") from None

    def ports_list(self, kind: str, i: int, key: str, values) -> Optional[List[int]]:
        if values is None:
            return None
        if not isinstance(values, list):
            raise self.fail(kind, i, key, f"expected a list of port numbers, got {values!r}")
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
                raise self.fail(kind, i, key, f"{v!r} is not a port number (1-65535)")
        return sorted(set(values))

    def netns(self, kind: str, i: int, value: Optional[str]) -> Optional[str]:
        if value is not None and (not _NAME.match(value) or len(value) > 64):
            raise self.fail(kind, i, "netns", f"{value!r} is not a namespace name")
        return value

    # -- tables ----------------------------------------------------------------------------
    def bridge(self, i: int, b: Dict[str, Any]) -> Bridge:
        name = self.ifname("bridge", i, "name", b["name"])
        addresses = self.addresses("bridge", i, "addresses", b["addresses"])
        dhcp = None
        if b["dhcp"] is not None:
            dhcp = self.dhcp(i, b["dhcp"], addresses)
        if b["mtu"] is not None and not 68 <= b["mtu"] <= 65535:
            raise self.fail("bridge", i, "mtu", f"mtu {b['mtu']} is outside 68-65535")
        if not 0 <= b["forward_delay"] <= 30:
            raise self.fail("bridge", i, "forward_delay", "forward_delay is 0-30 seconds")
        return Bridge(name, self.mac("bridge", i, "hwaddr", b["hwaddr"], f"bridge:{name}"),
                      addresses, b["stp"], b["forward_delay"], b["vlan_filtering"], b["mtu"], dhcp,
                      self.ports_list("bridge", i, "host_tcp", b["host_tcp"]),
                      self.ports_list("bridge", i, "host_udp", b["host_udp"]))

    def dhcp(self, i: int, d: Dict[str, Any], addresses: List[str]) -> Dhcp:
        nets = [ipaddress.ip_interface(a) for a in addresses]
        nets = [n for n in nets if n.version == 4]
        if not nets:
            raise self.fail("bridge", i, "dhcp", "a DHCP server needs an IPv4 address on the "
                            "bridge (addresses = [\"10.77.0.1/24\"])")
        net = nets[0].network
        where = "dhcp"
        if not d["range"] or len(d["range"]) != 2:
            raise self.fail("bridge", i, where, 'dhcp needs range = ["FIRST", "LAST"]')
        first, last = (self.address("bridge", i, where, str(a)) for a in d["range"])
        for a in (first, last):
            if ipaddress.ip_address(a) not in net:
                raise self.fail("bridge", i, where, f"dhcp range address {a} is outside {net}")
        if ipaddress.ip_address(first) > ipaddress.ip_address(last):
            raise self.fail("bridge", i, where, f"dhcp range {first} > {last}")
        static = {}
        for mac, ip in d["static"].items():
            problem = check_mac(mac)
            if problem:
                raise self.fail("bridge", i, where, f"static lease: {problem}")
            if not isinstance(ip, str) or ipaddress.ip_address(
                    self.address("bridge", i, where, ip)) not in net:
                raise self.fail("bridge", i, where, f"static lease {mac}: {ip!r} is not an "
                                f"address in {net}")
            static[mac.lower()] = ip
        if not re.match(r"^(\d+[smhd]?|infinite)$", d["lease_time"]):
            raise self.fail("bridge", i, where, f"lease_time {d['lease_time']!r}: 45m, 1h, "
                            "3600 or infinite")
        return Dhcp(first, last, str(net.netmask), d["lease_time"], static, d["dns"])

    def port(self, i: int, p: Dict[str, Any], m: NetworkModel) -> Port:
        name = self.ifname("port", i, "name", p["name"])
        if not p["bridge"]:
            raise self.fail("port", i, "", "needs 'bridge'")
        bridges = {b.name: b for b in m.bridges}
        if p["bridge"] not in bridges:
            raise self.fail("port", i, "bridge", f"bridge {p['bridge']!r} is not declared "
                            f"(bridges: {', '.join(bridges) or 'none'})")
        netns = self.netns("port", i, p["netns"])
        if p["created_by"] == "lxc" and netns:
            raise self.fail("port", i, "netns", "a port LXC makes has no netns (LXC moves it)")
        # A peer in a netns or taken by LXC never sits on the host under its name.
        host_peer = not netns and p["created_by"] == "lxembed"
        peer = self.ifname("port", i, "peer", p["peer"] or (None if host_peer else "eth0"),
                           host=host_peer)
        peer_mac = self.mac("port", i, "peer_hwaddr", p["peer_hwaddr"], f"peer:{name}")
        addresses = self.addresses("port", i, "addresses", p["addresses"])
        gateway = self.address("port", i, "gateway", p["gateway"])
        bridge = bridges[p["bridge"]]
        if gateway is None and netns and any(":" not in a for a in addresses) and bridge.ipv4():
            gateway = str(bridge.ipv4()[0].ip)
        if gateway and not netns:
            raise self.fail("port", i, "gateway", "gateway is set inside `netns`; a container "
                            "runtime sets its own")
        macs = []
        for mac in p["allowed_macs"]:
            problem = check_mac(str(mac))
            if problem:
                raise self.fail("port", i, "allowed_macs", problem)
            macs.append(str(mac).lower())
        allowed = [str(ipaddress.ip_interface(a).ip) for a in addresses]
        allowed += self.addresses("port", i, "allowed_ips", p["allowed_ips"], prefix=False)
        if bridge.dhcp and peer_mac in bridge.dhcp.static:
            allowed.append(bridge.dhcp.static[peer_mac])
        if p["vlan"] is not None:
            if not 1 <= p["vlan"] <= 4094:
                raise self.fail("port", i, "vlan", f"VLAN id {p['vlan']} is not in 1-4094")
            if not bridge.vlan_filtering:
                raise self.fail("port", i, "vlan", f"bridge {bridge.name} needs "
                                "vlan_filtering = true for its ports to be in VLANs")
            if p["created_by"] != "lxc":
                raise self.fail("port", i, "vlan", "a port's VLAN is set by its LXC start-host "
                                "hook (created_by = \"lxc\"); `net up` does not set it")
        return Port(name, self.mac("port", i, "hwaddr", p["hwaddr"], f"port:{name}"), bridge.name,
                    peer, peer_mac, netns, p["created_by"], addresses, gateway,
                    p["anti_spoofing"], macs, allowed, p["isolated"],
                    self.ports_list("port", i, "inbound_tcp", p["inbound_tcp"]),
                    self.ports_list("port", i, "inbound_udp", p["inbound_udp"]), p["vlan"],
                    p["dhcp_server"])

    def veth(self, i: int, v: Dict[str, Any]) -> Veth:
        name = self.ifname("veth", i, "name", v["name"])
        peer = self.ifname("veth", i, "peer", v["peer"])
        return Veth(name, peer, self.mac("veth", i, "hwaddr", v["hwaddr"], f"veth:{name}"),
                    self.mac("veth", i, "peer_hwaddr", v["peer_hwaddr"], f"veth:{peer}"))

    def macvlan(self, i: int, v: Dict[str, Any]) -> Macvlan:
        netns = self.netns("macvlan", i, v["netns"])
        name = self.ifname("macvlan", i, "name", v["name"], host=not netns)
        if not v["parent"]:
            raise self.fail("macvlan", i, "", "needs 'parent'")
        addresses = self.addresses("macvlan", i, "addresses", v["addresses"])
        gateway = self.address("macvlan", i, "gateway", v["gateway"])
        if gateway and not netns:
            raise self.fail("macvlan", i, "gateway", "gateway is only for a macvlan in a netns")
        return Macvlan(name, v["parent"], v["mode"],
                       self.mac("macvlan", i, "hwaddr", v["hwaddr"], f"macvlan:{netns}:{name}"),
                       netns, addresses, self.addresses("macvlan", i, "routes", v["routes"],
                                                        prefix=False), gateway)

    def vlan(self, i: int, v: Dict[str, Any], m: NetworkModel) -> Vlan:
        name = self.ifname("vlan", i, "name", v["name"])
        if not v["parent"] or v["id"] is None:
            raise self.fail("vlan", i, "", "needs 'parent' and 'id'")
        if not 1 <= v["id"] <= 4094:
            raise self.fail("vlan", i, "id", f"id {v['id']} is outside 1-4094")
        self._check_bridge("vlan", i, v["bridge"], m)
        return Vlan(name, v["parent"], v["id"], v["bridge"],
                    self.addresses("vlan", i, "addresses", v["addresses"]))

    def phys(self, i: int, v: Dict[str, Any], m: NetworkModel) -> Phys:
        name = self.ifname("phys", i, "name", v["name"])
        netns = self.netns("phys", i, v["netns"])
        if bool(v["bridge"]) == bool(netns):
            raise self.fail("phys", i, "name", "a physical interface goes to a bridge or to a "
                            "netns: give exactly one of 'bridge' and 'netns'")
        self._check_bridge("phys", i, v["bridge"], m)
        return Phys(name, v["bridge"], netns)

    def _check_bridge(self, kind: str, i: int, bridge: Optional[str], m: NetworkModel) -> None:
        if bridge is not None and bridge not in {b.name for b in m.bridges}:
            raise self.fail(kind, i, "bridge", f"bridge {bridge!r} is not declared")

