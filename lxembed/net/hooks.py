"""LXC hook scripts for a port LXC makes itself (`created_by = "lxc"`, `lxc.net.N.veth.pair`).

LXC has no key for the host side's MAC. `lxc.hook.start-host` runs on the host once the veth
exists: the script sets that MAC, the port's bridge flags, and loads the port's own table
(`bridge lxembed_port_PORT`); `lxc.hook.post-stop` deletes the table (LXC deletes the veth).
The scripts need only `sh`, `ip` and `nft` (and iproute2's `bridge` for a port in a VLAN):
they also run on devices that have no lxembed.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, Tuple

from ..errors import UserError
from .model import NetworkModel, Port
from .rules import bridge_table, port_table_name


def port_rules(port: Port) -> str:
    """The port's own table, as one replace-in-place nft transaction."""
    return "\n".join(bridge_table(port_table_name(port.name), [port])) + "\n"


def lxc_hook_scripts(model: NetworkModel, port_name: str,
                     preloaded: bool = False) -> Tuple[str, str]:
    """(start-host script, post-stop script) for one port of a description.

    `preloaded`: the port's table is loaded once at boot with the device's own network (its
    rules match the port by name, before it exists): the hooks leave it alone, so a container
    (re)start runs no nft and its port is never without its filter.
    """
    port = model.port(port_name)
    if port.created_by != "lxc":
        raise UserError(f"{model.path}: port {port.name} is made by `lxembed net up`, not by "
                        "LXC: give it created_by = \"lxc\" to use it as lxc.net.N.veth.pair")
    head = (f"#!/bin/sh\n# lxembed: {{}} hook for port {port.name} of network {model.name!r}"
            f" ({model.path}).\n# Generated: needs only sh, ip and nft. LXC passes the "
            "container name, section and hook type as arguments.\nset -eu\n"
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n")
    dev = shlex.quote(port.name)
    start = [head.format("lxc.hook.start-host"),
             f"# LXC made {port.name}; give it the declared host-side MAC.",
             f"ip link set dev {dev} address {port.hwaddr}"]
    if port.isolated:  # sysfs, not `ip ... bridge_slave`: busybox's ip has no such type
        start.append(f"echo 1 > /sys/class/net/{port.name}/brport/isolated")
    if port.vlan is not None:  # iproute2's bridge: an untagged member of its VLAN only
        start += [f"bridge vlan del dev {dev} vid 1",
                  f"bridge vlan add dev {dev} vid {port.vlan} pvid untagged"]
    rules = port_rules(port)
    if rules.strip() and not preloaded:
        start += ["# The port's own filter table (anti-spoofing, DHCP server guard, inbound "
                  "ports).",
                  "nft -f - <<'LXEMBED_RULES'", rules.rstrip(), "LXEMBED_RULES"]
    stop = [head.format("lxc.hook.post-stop"),
            f"# LXC deleted {port.name}; its table goes too (absent already is fine).",
            f"nft delete table bridge {port_table_name(port.name)} 2>/dev/null || true"]
    if preloaded:
        stop[1:] = [f"# LXC deleted {port.name}; its table stays, loaded at boot for the "
                    "port's next start."]
    return "\n".join(start) + "\n", "\n".join(stop) + "\n"


def write_lxc_hooks(model: NetworkModel, port_name: str, directory: Path) -> Dict[str, Path]:
    """Write both scripts (mode 0755) into `directory`; returns {LXC key: path}."""
    start, stop = lxc_hook_scripts(model, port_name)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, text, suffix in (("lxc.hook.start-host", start, "start-host"),
                              ("lxc.hook.post-stop", stop, "post-stop")):
        path = directory / f"net-{port_name}-{suffix}.sh"
        path.write_text(text)
        path.chmod(0o755)
        paths[key] = path
    return paths
