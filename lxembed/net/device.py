"""A device's own network, rendered at build time from the same description `lxembed net up`
reads: a set-up script of `ip` commands and sysfs writes for the device's init to run at boot
(iproute2's `ip`: busybox's ignores a macvlan's mode and a veth peer's name; `bridge` for VLAN
membership), and the nftables ruleset it loads in one `nft -f`.

The device applies it before any container starts; each service container's port then gets
its host-side MAC and its own filter table from its LXC hooks (lxembed.net.hooks), as on a host.
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import List

from ..errors import UserError
from .model import NetworkModel
from .rules import render

RULES_FILE = "/etc/lxembed/network.nft"


def _q(word: str) -> str:
    return shlex.quote(word)


def device_setup(model: NetworkModel) -> str:
    """The script that makes the device's links, addresses and rules; set -e: a step that fails
    is named on the console and the oneshot service fails."""
    unsupported = [f"port {p.name} (netns)" for p in model.ports if p.netns]
    unsupported += [f"port {p.name} (made by net up)" for p in model.ports
                    if p.created_by != "lxc" and not p.netns]
    unsupported += [f"macvlan {m.name} (netns)" for m in model.macvlans if m.netns]
    unsupported += [f"phys {p.name}" for p in model.phys]
    if unsupported:
        raise UserError(f"{model.path}: a device's network makes its bridges, shims and VLANs; "
                        f"its containers' ports are made by LXC (created_by = \"lxc\"): "
                        f"{', '.join(unsupported)} cannot be set up on the device")
    out = ["#!/bin/sh",
           f"# lxembed: the device network {model.name!r} ({model.path}), generated; applied",
           "# by the init before any container starts.",
           "set -eu", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
           'step() { echo "network: $*"; }', ""]
    for b in model.bridges:
        sysfs = f"/sys/class/net/{b.name}/bridge"
        out += [f"step {_q(f'bridge {b.name}')}",
                f"ip link add {_q(b.name)} type bridge",
                f"ip link set dev {_q(b.name)} address {b.hwaddr}",
                f"echo {1 if b.stp else 0} > {sysfs}/stp_state",
                f"echo {b.forward_delay * 100} > {sysfs}/forward_delay"]
        if b.vlan_filtering:
            out.append(f"echo 1 > {sysfs}/vlan_filtering")
        if b.mtu:
            out.append(f"ip link set dev {_q(b.name)} mtu {b.mtu}")
        out += _addresses(b.name, b.addresses)
        out.append(f"ip link set dev {_q(b.name)} up")
    for v in model.veths:
        out += [f"step {_q(f'veth {v.name}/{v.peer}')}",
                f"ip link add {_q(v.name)} address {v.hwaddr} type veth peer name {_q(v.peer)}"
                f" address {v.peer_hwaddr}",
                f"ip link set dev {_q(v.name)} up", f"ip link set dev {_q(v.peer)} up"]
    for m in model.macvlans:
        out += [f"step {_q(f'macvlan {m.name} on {m.parent}')}",
                f"ip link set dev {_q(m.parent)} up",
                f"ip link add link {_q(m.parent)} name {_q(m.name)} address {m.hwaddr} "
                f"type macvlan mode {m.mode}"]
        out += _addresses(m.name, m.addresses)
        out.append(f"ip link set dev {_q(m.name)} up")
        for route in m.routes:
            out.append(f"ip route replace {route} dev {_q(m.name)}")
    for v in model.vlans:
        out += [f"step {_q(f'vlan {v.name} (id {v.id} on {v.parent})')}",
                f"ip link set dev {_q(v.parent)} up",
                f"ip link add link {_q(v.parent)} name {_q(v.name)} type vlan id {v.id}"]
        if any(b.name == v.parent and b.vlan_filtering for b in model.bridges):
            # The bridge itself is a member of the VLAN so that its VLAN device sees it.
            out.append(f"bridge vlan add dev {_q(v.parent)} vid {v.id} self")
        out += _addresses(v.name, v.addresses)
        out.append(f"ip link set dev {_q(v.name)} up")
    if model.nat:
        out += ["step forwarding", "echo 1 > /proc/sys/net/ipv4/ip_forward"]
    if render(model):
        out += ["step rules", f"nft -f {RULES_FILE}"]
    out += ["step done", ""]
    return "\n".join(out)


def _addresses(dev: str, addresses: List[str]) -> List[str]:
    lines = []
    for address in addresses:
        family = "-6 " if ipaddress.ip_interface(address).version == 6 else ""
        lines.append(f"ip {family}addr add {address} dev {_q(dev)}")
    return lines


def device_rules(model: NetworkModel) -> str:
    """The ruleset the set-up script loads (lxembed's own tables only)."""
    return render(model)
