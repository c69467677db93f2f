"""nftables rules from a NetworkModel, checked with `nft -c` and applied in one transaction.

lxembed owns whole tables (`bridge lxembed_NAME` for per-port filtering, `inet lxembed_NAME` for
host input and NAT) and never touches another table. Each table is written as "add; delete;
define", so one `nft -f` replaces it atomically whether or not it existed.

Shapes learnt from Incus's bridge filter (security.mac_filtering, ipv4_filtering, ipv6_filtering)
and OpenWrt's firewall4, with one difference: the filter sits on the bridge's prerouting hook, so
a DHCP DISCOVER from a filtered port passes to every port of the bridge (a DHCP server in another
container answers), not only to the host. Only a port declared `dhcp_server` may answer it: as
OpenStack's port security does (Incus's filters and libvirt's clean-traffic do not), every
other port's DHCP, DHCPv6 and router messages drop.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
from typing import Iterable, List, Optional

from ..errors import UserError
from .model import NetworkModel, Port

# UDP replies a port with an inbound filter still gets: DNS, DHCP, NTP and DHCPv6 servers
# answering it.
# The bridge family has no conntrack on kernels without nf_conntrack_bridge, so inbound filtering
# is stateless: TCP SYNs to closed ports drop, other TCP segments (replies) pass.
UDP_REPLY_PORTS = (53, 67, 123, 547)

# What only a port declared `dhcp_server` may send: answers to DHCP and DHCPv6 clients, and the
# router messages that configure hosts (a rogue router advertises itself as the default route,
# or redirects a host's traffic to itself). Anti-spoofing alone lets a rogue server through: it
# answers from its own, declared address. Dropped in the port's prerouting chain, so neither
# the frames the bridge forwards (broadcast included) nor those it delivers to the host itself
# get past.
SERVER_ONLY = (
    "udp sport 67 udp dport 68 drop",
    "udp sport 547 udp dport 546 drop",
    "icmpv6 type { nd-router-advert, nd-redirect } drop",
    "icmp type redirect drop",
)


def table_name(model_name: str) -> str:
    return "lxembed_" + model_name.replace("-", "_")


def port_table_name(port: str) -> str:
    """The table an LXC hook owns for one port (ports LXC makes have their own table)."""
    return "lxembed_port_" + "".join(c if c.isalnum() else "_" for c in port)


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def link_local(mac: str) -> str:
    """The EUI-64 link-local address the kernel gives an interface with this MAC."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))


def _chain_name(prefix: str, port: str) -> str:
    return f'{prefix}_{port.replace(".", "_").replace("-", "_").replace("@", "_")}'


def server_guard(port: Port) -> List[str]:
    """The rules that keep a port that is not a DHCP server from answering as one."""
    if port.dhcp_server:
        return ["# the DHCP server (dhcp_server = true): its DHCP answers and router adverts pass"]
    return ["# not a DHCP server: its DHCP and DHCPv6 answers, router adverts and redirects drop",
            *SERVER_ONLY]


def port_from_chain(port: Port) -> List[str]:
    """Rules for frames a port sends into the bridge (anti-spoofing, the DHCP server guard)."""
    if not port.anti_spoofing:
        return server_guard(port)
    macs = [port.peer_hwaddr, *port.allowed_macs]
    v4 = [a for a in port.allowed_ips if ipaddress.ip_network(a, strict=False).version == 4]
    v6 = [a for a in port.allowed_ips if ipaddress.ip_network(a, strict=False).version == 6]
    v6_sources = ["::", *(link_local(m) for m in macs), *v6]
    rules = [
        f"ether saddr != {_set(macs)} drop",
        "# only ARP, IPv4 and IPv6: no VLAN-in-VLAN or other ethertypes slip past",
        "ether type != { arp, ip, ip6 } drop",
        f"arp saddr ether != {_set(macs)} drop",
        f"arp saddr ip != {_set(['0.0.0.0', *v4])} drop",
        *server_guard(port),
        "# DHCP clients send from 0.0.0.0: let them reach any DHCP server on the bridge",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
    ]
    rules.append(f"ip saddr != {_set(v4)} drop" if v4 else "ether type ip drop")
    singles = [a.split("/")[0] for a in v6_sources[1:] if "/" not in a or a.endswith("/128")]
    if len(singles) == len(v6_sources) - 1:  # a neighbour advert may only name these
        checks = " ".join(f"@th,64,128 != 0x{int(ipaddress.ip_address(a)):032x}" for a in singles)
        rules.append(f"icmpv6 type nd-neighbor-advert {checks} drop")
    rules.append(f"ip6 saddr != {_set(v6_sources)} drop")
    return rules


def port_to_chain(port: Port) -> List[str]:
    """Rules for frames the bridge sends out of a port with an inbound filter."""
    rules = ["ether type arp accept", "meta l4proto { icmp, icmpv6 } accept"]
    if port.inbound_tcp:
        rules.append(f"tcp dport {_set(map(str, port.inbound_tcp))} accept")
    rules.append("# stateless: segments without a lone SYN belong to connections the port opened")
    rules.append("tcp flags & (syn | ack) != syn accept")
    if port.inbound_udp:
        rules.append(f"udp dport {_set(map(str, port.inbound_udp))} accept")
    rules.append(f"udp sport {_set(map(str, UDP_REPLY_PORTS))} accept")
    rules.append("ether type { ip, ip6 } drop")
    return rules


def _chain(name: str, comment: str, rules: List[str], hook: Optional[str] = None) -> List[str]:
    out = [f"\t# {comment}", f"\tchain {name} {{"]
    if hook:
        out.append(f"\t\t{hook}")
    out += [f"\t\t{r}" for r in rules]
    return out + ["\t}"]


def bridge_table(table: str, ports: List[Port]) -> List[str]:
    """A bridge-family table filtering the given ports; [] when none needs a rule."""
    # Every port but an unfiltered DHCP server has a chain for what it sends: a port without
    # anti_spoofing may use any address, yet still not answer as a DHCP server.
    senders = [p for p in ports if p.anti_spoofing or not p.dhcp_server]
    inbound = [p for p in ports if p.inbound_tcp is not None or p.inbound_udp is not None]
    if not senders and not inbound:
        return []
    body: List[str] = []
    if senders:
        vmap = ", ".join(f'"{p.name}" : jump {_chain_name("from", p.name)}' for p in senders)
        body += _chain("from_ports", "frames entering the bridge from a filtered port",
                       [f"iifname vmap {{ {vmap} }}"],
                       "type filter hook prerouting priority -200; policy accept;")
    if inbound:
        vmap = ", ".join(f'"{p.name}" : jump {_chain_name("to", p.name)}' for p in inbound)
        body += _chain("to_ports", "frames leaving the bridge through a port with inbound rules",
                       [f"oifname vmap {{ {vmap} }}"],
                       "type filter hook postrouting priority 0; policy accept;")
    for p in senders:
        if p.anti_spoofing:
            comment = (f"port {p.name}: sends only as {p.peer_hwaddr} "
                       f"{' '.join(p.allowed_ips) or '(DHCP client)'}")
        else:
            comment = f"port {p.name}: any source (anti_spoofing = false)"
        if p.dhcp_server:
            comment += "; the DHCP server"
        body += _chain(_chain_name("from", p.name), comment, port_from_chain(p))
    for p in inbound:
        opened = [f"tcp {x}" for x in p.inbound_tcp or []] + [f"udp {x}" for x in
                                                               p.inbound_udp or []]
        body += _chain(_chain_name("to", p.name),
                       f"port {p.name}: open to {', '.join(opened) or 'nothing'}",
                       port_to_chain(p))
    return _replace("bridge", table, body)


def inet_table(table: str, model: NetworkModel) -> List[str]:
    """Host input filtering from bridges that ask for it, and masquerade; [] when neither."""
    body: List[str] = []
    filtered = [b for b in model.bridges if b.host_tcp is not None or b.host_udp is not None]
    if filtered:
        jumps = [f'iifname "{b.name}" jump {_chain_name("input", b.name)}' for b in filtered]
        body += _chain("input", "what reaches the host from filtered bridges", jumps,
                       "type filter hook input priority 0; policy accept;")
        for b in filtered:
            rules = ["ct state established,related accept",
                     "meta l4proto { icmp, icmpv6 } accept"]
            udp, tcp = list(b.host_udp or []), list(b.host_tcp or [])
            if b.dhcp:
                udp.append(67)
                if b.dhcp.dns:
                    udp.append(53)
                    tcp.append(53)
            if tcp:
                rules.append(f"tcp dport {_set(map(str, sorted(set(tcp))))} accept")
            if udp:
                rules.append(f"udp dport {_set(map(str, sorted(set(udp))))} accept")
            rules.append("drop")
            body += _chain(_chain_name("input", b.name), f"bridge {b.name} to the host", rules)
    if model.nat:
        rules = []
        for n in model.nat:
            for iface in model.bridge(n.bridge).ipv4():
                net = iface.network
                rules.append(f'ip saddr {net} ip daddr != {net} oifname "{n.uplink}" masquerade')
        body += _chain("nat_out", "bridges that leave through an uplink", rules,
                       "type nat hook postrouting priority srcnat; policy accept;")
    return _replace("inet", table, body) if body else []


def _replace(family: str, table: str, body: List[str]) -> List[str]:
    # add + delete + define: one transaction that replaces the table whether it existed or not.
    return [f"table {family} {table} {{}}", f"delete table {family} {table}",
            f"table {family} {table} {{", *body, "}"]


def render(model: NetworkModel) -> str:
    """The whole ruleset text lxembed applies for a description (empty when no rules)."""
    table = table_name(model.name)
    lines = bridge_table(table, [p for p in model.ports if p.created_by == "lxembed"])
    lines += inet_table(table, model)
    if not lines:
        return ""
    head = [f"# lxembed network {model.name!r} from {model.path}: generated, do not edit"]
    return "\n".join(head + lines) + "\n"


def tables_in(text: str) -> List[List[str]]:
    """[family, name] of each table a rendered ruleset defines."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "table" and parts[3] == "{" and \
                [parts[1], parts[2]] not in out:
            out.append([parts[1], parts[2]])
    return out


def count_rules(text: str) -> int:
    """Rules in a rendered ruleset (lines inside chains other than hooks and comments)."""
    n, depth = 0, 0
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("chain "):
            depth = 1
        elif s == "}" and depth:
            depth = 0
        elif depth and s and not s.startswith(("#", "type ")):
            n += 1
    return n


def nft(args: List[str], text: Optional[str] = None, what: str = "nft") -> str:
    cmd = ["nft", *args]
    if text is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
            fh.write(text)
        cmd += ["-f", fh.name]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("nft is not installed", hint="apt-get install nftables") from None
    finally:
        if text is not None:
            os.unlink(fh.name)
    if result.returncode != 0:
        raise UserError(f"{what}: {result.stderr.strip()}")
    return result.stdout


def check(text: str, what: str) -> None:
    """`nft -c`: the kernel validates the whole transaction without committing it.

    The rules only make lxembed's own tables, so the check runs in a fresh network namespace
    (`unshare -n`; `-rn` without root) and never talks to the host's ruleset at all."""
    if not text:
        return
    prefix = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as fh:
        fh.write(text)
        fh.flush()
        try:
            result = subprocess.run([*prefix, "nft", "-c", "-f", fh.name], capture_output=True,
                                    text=True)
        except FileNotFoundError as err:
            raise UserError(f"{err.filename} is not installed",
                            hint="apt-get install nftables util-linux") from None
    if result.returncode != 0:
        raise UserError(f"{what}: nft -c refused the rules: "
                        f"{result.stderr.strip().replace(fh.name, 'rules')}")


def list_table(family: str, table: str) -> Optional[str]:
    """`nft list table` text, or None when it does not exist."""
    result = subprocess.run(["nft", "list", "table", family, table], capture_output=True,
                            text=True)
    return result.stdout if result.returncode == 0 else None


def existing_tables() -> List[List[str]]:
    """[family, name] of every table in the namespace (`nft list tables`)."""
    out = nft(["list", "tables"], what="listing tables")
    return [line.split()[1:3] for line in out.splitlines() if line.startswith("table ")]


def delete_tables(tables: List[List[str]]) -> None:
    if not tables:
        return
    existing = existing_tables()
    present = [t for t in tables if t in existing]
    if present:
        nft([], "".join(f"delete table {f} {t}\n" for f, t in present), "removing rules")
