"""Container network interfaces: the model both LXC and OCI writers read, checked once here."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import UserError

# Types that put a real interface into the container (and so have a name and a MAC).
WITH_DEVICE = ("phys", "veth", "vlan", "macvlan")
# Types whose parent/bridge (`link`) must be named.
NEEDS_LINK = ("phys", "vlan", "macvlan")
IFNAMSIZ = 15  # the kernel's limit on interface names, without the NUL

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME = re.compile(r"^[^/\s:]+$")


@dataclass
class Network:
    """One interface of a container, with defaults resolved (name, MAC)."""

    type: str
    name: Optional[str] = None
    link: Optional[str] = None
    hwaddr: Optional[str] = None
    ipv4: List[str] = field(default_factory=list)
    ipv4_gateway: Optional[str] = None
    ipv6: List[str] = field(default_factory=list)
    ipv6_gateway: Optional[str] = None
    mtu: Optional[int] = None
    veth_pair: Optional[str] = None
    vlan_id: Optional[int] = None
    macvlan_mode: str = "private"
    flags: List[str] = field(default_factory=lambda: ["up"])
    # A port of a host network description LXC makes: (port, start-host script, post-stop
    # script), written beside the LXC config as its hooks (lxembed.net.ports).
    hooks: Optional[Tuple[str, str, str]] = None


def stable_mac(container: str, interface: str) -> str:
    """A MAC that depends only on the two names: rebuilding never changes a DHCP lease or ARP.

    The first octet gets the locally administered bit (0x02) and loses the multicast bit (0x01),
    so the address can never clash with a vendor-assigned one.
    """
    digest = hashlib.sha256(f"lxembed:{container}:{interface}".encode()).digest()
    octets = bytearray(digest[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def check_mac(mac: str) -> Optional[str]:
    """Why `mac` cannot be an interface address, or None when it can."""
    if not _MAC.match(mac):
        return f"{mac!r} is not a MAC address (six hex octets: 02:00:00:00:00:01)"
    first = int(mac[:2], 16)
    if first & 0x01:
        return (
            f"{mac} is a multicast MAC (lowest bit of the first octet set); use e.g. "
            f"{first & 0xFE:02x}{mac[2:]}"
        )
    if mac.replace(":", "") in ("000000000000",):
        return f"{mac} is the all-zero MAC"
    return None


def _check_address(value: str, version: int) -> Optional[str]:
    if "/" not in value:
        return f"{value!r} has no prefix length (write it as {value}/{24 if version == 4 else 64})"
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError as err:
        return f"{value!r} is not an IPv{version} address: {err}"
    if iface.version != version:
        return f"{value!r} is an IPv{iface.version} address, not IPv{version}"
    return None


def _check_gateway(value: str, version: int) -> Optional[str]:
    if value in ("auto", "dev"):
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return f'{value!r} is not an IPv{version} address (or "auto")'
    if addr.version != version:
        return f"{value!r} is not an IPv{version} address"
    return None


def parse_networks(
    items: List[Dict[str, Any]], container: str, where: Callable[[int, str], str]
) -> List[Network]:
    """Turn validated `[[container.network]]` tables into Networks, or raise one UserError.

    `where(index, key)` gives "file:line" for the key of the index-th table.
    """
    networks, names = [], {}
    for i, item in enumerate(items):

        def fail(key: str, message: str, i: int = i) -> UserError:
            return UserError(f"{where(i, key)}: [[container.network]] #{i + 1}: {message}")

        kind = item["type"]
        if kind is None:
            raise fail("type", f"needs a type (one of: empty, none, {', '.join(WITH_DEVICE)})")
        net = Network(**{k: v for k, v in item.items() if k in Network.__dataclass_fields__})
        if kind in WITH_DEVICE:
            net.name = net.name or f"eth{sum(n.type in WITH_DEVICE for n in networks)}"
        else:
            for key in ("name", "link", "hwaddr", "veth_pair", "vlan_id", "mtu"):
                if item.get(key) is not None:
                    raise fail(key, f"{key} means nothing for type {kind!r}")
            if item["ipv4"] or item["ipv6"]:
                raise fail(
                    "ipv4" if item["ipv4"] else "ipv6",
                    f"type {kind!r} has no interface to put an address on",
                )
        if kind in NEEDS_LINK and not net.link:
            what = {
                "phys": "the host device to move in",
                "vlan": "the parent interface",
                "macvlan": "the parent interface",
            }[kind]
            raise fail("type", f"type {kind!r} needs link = {what}")
        if kind == "vlan":
            if net.vlan_id is None:
                raise fail("type", "type 'vlan' needs vlan_id (1-4094)")
            if not 1 <= net.vlan_id <= 4094:
                raise fail("vlan_id", f"vlan_id {net.vlan_id} is outside 1-4094")
        elif net.vlan_id is not None:
            raise fail("vlan_id", f"vlan_id is only for type 'vlan', not {kind!r}")
        if net.veth_pair is not None and kind != "veth":
            raise fail("veth_pair", f"veth_pair is only for type 'veth', not {kind!r}")
        for key in ("name", "veth_pair", "link"):
            value = getattr(net, key)
            if value is not None and (len(value) > IFNAMSIZ or not _IFNAME.match(value)):
                raise fail(
                    key,
                    f"{key} {value!r} is not an interface name (at most "
                    f"{IFNAMSIZ} characters, no '/', ':' or spaces)",
                )
        if net.name is not None:
            if net.name in names:
                raise fail("name", f"interface {net.name!r} is already network #{names[net.name]}")
            names[net.name] = i + 1
        if net.hwaddr is not None:
            problem = check_mac(net.hwaddr)
            if problem:
                raise fail("hwaddr", problem)
            net.hwaddr = net.hwaddr.lower()
        elif kind in ("veth", "vlan") or (kind == "macvlan" and net.macvlan_mode != "passthru"):
            # phys keeps its own MAC; a passthru macvlan must carry its parent's.
            net.hwaddr = stable_mac(container, net.name)
        for version, key in ((4, "ipv4"), (6, "ipv6")):
            for value in getattr(net, key):
                problem = _check_address(str(value), version)
                if problem:
                    raise fail(key, problem)
            gateway = getattr(net, f"{key}_gateway")
            if gateway is not None:
                problem = _check_gateway(gateway, version)
                if problem:
                    raise fail(f"{key}_gateway", problem)
        if net.mtu is not None and not 68 <= net.mtu <= 65535:
            raise fail("mtu", f"mtu {net.mtu} is outside 68-65535")
        bad = [f for f in net.flags if f != "up"]
        if bad:
            raise fail("flags", f'unknown flag {bad[0]!r} (LXC knows only "up")')
        networks.append(net)
    if sum(n.type == "none" for n in networks) and len(networks) > 1:
        raise UserError(
            f"{where(0, 'type')}: [[container.network]]: type 'none' shares the "
            f"host's network and cannot be combined with other networks"
        )
    return networks
