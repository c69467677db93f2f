"""What a board's kernel can do for containers and networks, read from its configuration.

`lxc-checkconfig` answers for the running kernel only; this reads the `config-KVER` file in the
board's pinned Debian kernel package (or a vendor kernel's .config), so a board is checked
before it is flashed. One table names the options behind each capability lxembed relies on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from ..errors import UserError

BUILT_IN, MODULE, MISSING = "built in", "module", "missing"
_LINE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")

# (group, capability, options, module that provides it when =m). The order is the report's.
CAPABILITIES: Tuple[Tuple[str, str, Tuple[str, ...], str], ...] = (
    ("namespaces", "namespaces", ("NAMESPACES",), ""),
    ("namespaces", "uts namespace", ("UTS_NS",), ""),
    ("namespaces", "ipc namespace", ("IPC_NS",), ""),
    ("namespaces", "pid namespace", ("PID_NS",), ""),
    ("namespaces", "network namespace", ("NET_NS",), ""),
    ("namespaces", "user namespace", ("USER_NS",), ""),
    ("namespaces", "cgroup namespace", ("CGROUPS",), ""),  # part of CGROUPS since 4.6
    ("namespaces", "time namespace", ("TIME_NS",), ""),
    ("namespaces", "posix message queues", ("POSIX_MQUEUE",), ""),
    ("cgroups", "cgroups (v1 and v2)", ("CGROUPS",), ""),
    ("cgroups", "memory controller", ("MEMCG",), ""),
    ("cgroups", "pids controller", ("CGROUP_PIDS",), ""),
    ("cgroups", "cpu controller", ("CGROUP_SCHED",), ""),
    ("cgroups", "cpuset controller", ("CPUSETS",), ""),
    ("cgroups", "io controller", ("BLK_CGROUP",), ""),
    ("cgroups", "freezer (v1)", ("CGROUP_FREEZER",), ""),
    ("cgroups", "devices (v1 controller)", ("CGROUP_DEVICE",), ""),
    ("cgroups", "devices (v2, through BPF)", ("CGROUP_BPF",), ""),
    ("security", "seccomp filters", ("SECCOMP", "SECCOMP_FILTER"), ""),
    ("security", "capabilities", ("MULTIUSER",), ""),
    ("security", "devpts instances", ("UNIX98_PTYS",), ""),
    ("network", "veth", ("VETH",), "veth"),
    ("network", "bridge", ("BRIDGE",), "bridge"),
    ("network", "bridge vlan filtering", ("BRIDGE_VLAN_FILTERING",), ""),
    ("network", "macvlan", ("MACVLAN",), "macvlan"),
    ("network", "802.1Q vlan", ("VLAN_8021Q",), "8021q"),
    ("nftables", "nf_tables", ("NF_TABLES",), "nf_tables"),
    ("nftables", "inet family", ("NF_TABLES_INET",), ""),
    ("nftables", "bridge family", ("NF_TABLES_BRIDGE",), "nft_meta_bridge"),
    ("nftables", "netdev family", ("NF_TABLES_NETDEV",), ""),
    ("nftables", "conntrack (ct)", ("NFT_CT",), "nft_ct"),
    ("nftables", "nat / masquerade", ("NFT_NAT", "NFT_MASQ"), "nft_masq"),
    ("nftables", "reject", ("NFT_REJECT",), "nft_reject_inet"),
    ("filesystems", "overlayfs", ("OVERLAY_FS",), "overlay"),
    ("filesystems", "squashfs", ("SQUASHFS",), "squashfs"),
    ("filesystems", "ext4", ("EXT4_FS",), "ext4"),
    ("filesystems", "jffs2", ("JFFS2_FS",), "jffs2"),
    ("filesystems", "ubifs", ("UBIFS_FS",), "ubifs"),
    ("checkpoint", "checkpoint/restore (CRIU)", ("CHECKPOINT_RESTORE",), ""),
)


@dataclass
class KernelConfig:
    source: str  # the file read, for messages
    options: Dict[str, str]  # NAME (without CONFIG_) -> y, m, or a value; unset ones absent

    def state(self, option: str) -> str:
        value = self.options.get(option)
        if value == "y":
            return BUILT_IN
        if value == "m":
            return MODULE
        return MISSING

    def capability(self, options: Tuple[str, ...]) -> str:
        """All options needed: missing if one is, a module if one is, else built in."""
        states = [self.state(o) for o in options]
        if MISSING in states:
            return MISSING
        return MODULE if MODULE in states else BUILT_IN


def read_config(path: Path) -> KernelConfig:
    """Parse a kernel .config; refuses a file that is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise UserError(f"{path}: {err.strerror}") from None
    options = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            options[m.group(1)] = m.group(2).strip('"')
        elif _UNSET.match(line.strip()):
            options.pop(_UNSET.match(line.strip()).group(1), None)
    if not options:
        raise UserError(f"{path}: not a kernel configuration (no CONFIG_ lines)")
    return KernelConfig(str(path), options)


def report(config: KernelConfig) -> List[dict]:
    """One row per capability: group, name, state, options, the module that provides it."""
    rows = []
    for group, name, options, module in CAPABILITIES:
        state = config.capability(options)
        rows.append({"group": group, "capability": name, "state": state,
                     "options": {f"CONFIG_{o}": config.options.get(o) for o in options},
                     "module": module if state == MODULE else None})
    return rows


def recipe_needs(settings: dict) -> List[Tuple[str, str, Tuple[str, str]]]:
    """(capability, why, (table, key) that asks for it) a recipe relies on at run time."""
    needs = []
    if settings.get("container") is not None:
        for name in ("namespaces", "pid namespace", "network namespace", "cgroups (v1 and v2)"):
            needs.append((name, "the recipe builds a container", ("", "container")))
    interfaces = (settings.get("network") or {}).get("interfaces") or []
    if any(i.get("vlan") is not None for i in interfaces):
        needs.append(("802.1Q vlan", "an interface sets vlan", ("network", "interfaces")))
    return needs


def check_recipe(config: KernelConfig, recipe) -> List[str]:
    """Refuse (file:line) what the kernel cannot do for a Recipe; notes on built-in modules."""
    by_name = {name: options for _, name, options, _ in CAPABILITIES}
    for name, why, (table, key) in recipe_needs(recipe.settings):
        if config.capability(by_name[name]) == MISSING:
            options = ", ".join(f"CONFIG_{o}" for o in by_name[name])
            raise UserError(f"{recipe.line_of(key, table)}: {why}, but the board's kernel has "
                            f"no {name} ({options} not set in {config.source})")
    by_module = {module: options for _, _, options, module in CAPABILITIES if module}
    notes = []
    for module in recipe.settings.get("modules", []):
        options = by_module.get(module.replace("-", "_"))
        if options and config.capability(options) == BUILT_IN:
            notes.append(f"kernel module {module} is built into the kernel: nothing to load")
        elif options and config.capability(options) == MISSING:
            raise UserError(f"{recipe.line_of('modules')}: kernel module {module}: the board's "
                            f"kernel does not have it ({config.source})")
    return notes
