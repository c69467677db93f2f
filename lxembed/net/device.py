"""A device's own network, rendered at build time from the same description `lxembed net up`
reads: a set-up script of `ip` commands and sysfs writes for the device's init to run at boot
(iproute2's `ip`: busybox's ignores a macvlan's mode and a veth peer's name; `bridge` for VLAN
membership), and the nftables ruleset it loads in one `nft -f`.

The device applies it before any container starts, with every port's own filter table (matched
by name, so a port is filtered from the moment LXC makes it); each service container's port
then gets its host-side MAC from its LXC hook (lxembed.net.hooks), as on a host.
"""

from __future__ import annotations

import shlex
from typing import List

from ..errors import UserError
from .hooks import port_rules
from .model import NetworkModel
from .rules import render

RULES_FILE = "/etc/lxembed/network.nft"


def _q(word: str) -> str:
    return shlex.quote(word)


def device_setup(model: NetworkModel) -> str:
    """The script that makes the device's links, addresses and rules; set -e: a step that fails
    is named on the console and the oneshot service fails.

    Every link change is one `ip -batch` (and VLAN membership one `bridge -batch`): each run of
    a program costs ~50 ms on an emulated or small board, and a description makes dozens.
    """
    unsupported = [f"port {p.name} (netns)" for p in model.ports if p.netns]
    unsupported += [f"port {p.name} (made by net up)" for p in model.ports
                    if p.created_by != "lxc" and not p.netns]
    unsupported += [f"macvlan {m.name} (netns)" for m in model.macvlans if m.netns]
    unsupported += [f"phys {p.name}" for p in model.phys]
    if unsupported:
        raise UserError(f"{model.path}: a device's network makes its bridges, shims and VLANs; "
                        f"its containers' ports are made by LXC (created_by = \"lxc\"): "
                        f"{', '.join(unsupported)} cannot be set up on the device")
    steps: List[str] = []
    ip: List[str] = []
    bridge: List[str] = []
    for b in model.bridges:
        steps.append(f"bridge {b.name}")
        flags = f" stp_state {1 if b.stp else 0} forward_delay {b.forward_delay * 100}"
        if b.vlan_filtering:  # only when asked: a kernel without it refuses even a 0
            flags += " vlan_filtering 1"
        ip.append(f"link add {b.name} address {b.hwaddr} type bridge{flags}")
        if b.mtu:
            ip.append(f"link set dev {b.name} mtu {b.mtu}")
        ip += _addresses(b.name, b.addresses)
        ip.append(f"link set dev {b.name} up")
    for v in model.veths:
        steps.append(f"veth {v.name}/{v.peer}")
        ip += [f"link add {v.name} address {v.hwaddr} type veth peer name {v.peer}"
               f" address {v.peer_hwaddr}",
               f"link set dev {v.name} up", f"link set dev {v.peer} up"]
    for m in model.macvlans:
        steps.append(f"macvlan {m.name} on {m.parent}")
        ip += [f"link set dev {m.parent} up",
               f"link add link {m.parent} name {m.name} address {m.hwaddr} "
               f"type macvlan mode {m.mode}"]
        ip += _addresses(m.name, m.addresses)
        ip.append(f"link set dev {m.name} up")
        ip += [f"route replace {route} dev {m.name}" for route in m.routes]
    for v in model.vlans:
        steps.append(f"vlan {v.name} (id {v.id} on {v.parent})")
        ip += [f"link set dev {v.parent} up",
               f"link add link {v.parent} name {v.name} type vlan id {v.id}"]
        if any(b.name == v.parent and b.vlan_filtering for b in model.bridges):
            # The bridge itself is a member of the VLAN so that its VLAN device sees it.
            bridge.append(f"vlan add dev {v.parent} vid {v.id} self")
        ip += _addresses(v.name, v.addresses)
        ip.append(f"link set dev {v.name} up")
    out = ["#!/bin/sh",
           f"# lxembed: the device network {model.name!r}, generated; applied by the init",
           "# before any container starts.",
           "set -eu", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
           'step() { echo "network: $*"; }', ""]
    out += [f"step {_q(what)}" for what in steps]
    if ip:
        out += ["ip -batch - <<'LXEMBED_IP'", *ip, "LXEMBED_IP"]
    if bridge:
        out += ["bridge -batch - <<'LXEMBED_BRIDGE'", *bridge, "LXEMBED_BRIDGE"]
    if model.nat:
        out += ["step forwarding", "echo 1 > /proc/sys/net/ipv4/ip_forward"]
    if device_rules(model):
        out += ["step rules", f"nft -f {RULES_FILE}"]
    out += ["step done", ""]
    return "\n".join(out)


def _addresses(dev: str, addresses: List[str]) -> List[str]:
    return [f"addr add {address} dev {dev}" for address in addresses]


def device_rules(model: NetworkModel) -> str:
    """The ruleset the set-up script loads (lxembed's own tables only): the description's,
    and every LXC-made port's own table, loaded once here rather than by each start's hook
    (lxembed.net.hooks, preloaded)."""
    tables = [port_rules(p) for p in model.ports if p.created_by == "lxc"]
    return "".join([render(model)] + [t for t in tables if t.strip()])
