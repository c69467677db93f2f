"""LXC container configs from a ContainerSpec, for the LXC version the recipe names.

One list of settings in modern spelling (LXC >= 3.0) is spelled for the target version: the
legacy names for 1.x/2.x, and every key checked against that version's own key table
(lxc_keys.py). A key the version lacks is left out when it is lxembed's own addition (the
header says so), and refused with the recipe's file:line when a setting of the recipe needs it.
A legacy config converted by `lxc-update-config` gives back the modern one, except for the keys
old LXC never had.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import UserError
from ..net.ports import hook_files
from .lxc_keys import OLDEST, knows
from .network import Network
from .spec import ContainerSpec, Mount

# modern key -> legacy key, for the keys that were renamed in LXC 2.1/3.0.
LEGACY_KEYS = {
    "lxc.uts.name": "lxc.utsname",
    "lxc.rootfs.path": "lxc.rootfs",
    "lxc.tty.max": "lxc.tty",
    "lxc.pty.max": "lxc.pts",
    "lxc.init.cmd": "lxc.init_cmd",
    "lxc.signal.halt": "lxc.haltsignal",
    "lxc.signal.reboot": "lxc.rebootsignal",
    "lxc.apparmor.profile": "lxc.aa_profile",
    "lxc.selinux.context": "lxc.se_context",
    "lxc.idmap": "lxc.id_map",
    # lxc-update-config does not rename this one (its pattern wants `lxc.limit =`).
    "lxc.prlimit.nofile": "lxc.limit.nofile",
}

Entries = List[Tuple[str, str]]
# Which recipe setting a key says, as (table, key) for its file:line; None: lxembed's own key
# (a default, or a second spelling of a setting another key already carries).
Setting = Optional[Tuple[str, str]]
_Said = List[Tuple[str, str, Setting]]
_OWN: Setting = None
_CONTAINER = "container"


def is_legacy(version: Tuple[int, int]) -> bool:
    return version < (3, 0)


def _mount_entry(m: Mount) -> str:
    options = list(m.options)
    if m.kind == "file":
        options.append("create=file")
    else:
        options.append("create=dir")
    if m.optional:
        options.append("optional")
    # The target is relative: LXC then resolves it inside the rootfs, never on the host.
    return f"{m.source} {m.target.lstrip('/')} {m.fstype} {','.join(options)} 0 0"


def _network(net: Network, prefix: str, legacy: bool) -> Entries:
    out = [(f"{prefix}.type", net.type)]
    for key in ("link", "name", "hwaddr", "mtu"):
        value = getattr(net, key)
        if value is not None:
            out.append((f"{prefix}.{key}", str(value)))
    if net.flags:
        out.append((f"{prefix}.flags", " ".join(net.flags)))
    if net.type == "veth" and net.veth_pair:
        out.append((f"{prefix}.veth.pair", net.veth_pair))
    if net.type == "vlan":
        out.append((f"{prefix}.vlan.id", str(net.vlan_id)))
    if net.type == "macvlan":
        out.append((f"{prefix}.macvlan.mode", net.macvlan_mode))
    for version in ("ipv4", "ipv6"):
        for address in getattr(net, version):
            out.append(
                (f"{prefix}.{version}" if legacy else f"{prefix}.{version}.address", str(address))
            )
        gateway = getattr(net, f"{version}_gateway")
        if gateway:
            out.append((f"{prefix}.{version}.gateway", gateway))
    return out


def _core(spec: ContainerSpec, rootfs: str) -> _Said:
    c, limits, start = _CONTAINER, "container.limits", "container.start"
    e: _Said = [
        ("lxc.uts.name", spec.hostname, ("", "hostname")),
        ("lxc.arch", spec.arch.lxc, _OWN),
        ("lxc.rootfs.path", f"dir:{rootfs}", _OWN),
        # 0: lxc-destroy must never delete a directory lxembed wrote.
        ("lxc.rootfs.managed", "0", _OWN),
    ]
    if spec.readonly:
        e.append(("lxc.rootfs.options", "ro", (c, "readonly")))
    e += [
        ("lxc.autodev", "1", _OWN),
        ("lxc.tty.max", str(spec.tty), (c, "tty")),
        ("lxc.pty.max", str(spec.pty), (c, "pty")),
    ]
    if spec.cap_drop:
        e.append(("lxc.cap.drop", " ".join(spec.cap_drop), (c, "cap_drop")))
    # Both cgroup versions: LXC applies the keys of the hierarchy the host has and ignores the
    # others ("Ignoring cgroup2 limits on legacy cgroup system"), so one config fits both. The
    # v1 keys carry the setting; LXC before 3.0 knows no cgroup2 keys.
    for v, said in (("cgroup", (c, "devices")), ("cgroup2", _OWN)):
        e.append((f"lxc.{v}.devices.deny", "a", said))
        e += [(f"lxc.{v}.devices.allow", rule, said) for rule in spec.devices]
    if spec.memory:
        e += [
            ("lxc.cgroup.memory.limit_in_bytes", str(spec.memory), (limits, "memory")),
            ("lxc.cgroup2.memory.max", str(spec.memory), _OWN),
        ]
    if spec.pids:
        e += [
            ("lxc.cgroup.pids.max", str(spec.pids), (limits, "pids")),
            ("lxc.cgroup2.pids.max", str(spec.pids), _OWN),
        ]
    if spec.nofile:
        e.append(("lxc.prlimit.nofile", str(spec.nofile), (limits, "nofile")))
    if spec.mount_auto:
        e.append(("lxc.mount.auto", " ".join(spec.mount_auto), (c, "mount_auto")))
    e += [("lxc.mount.entry", _mount_entry(m), (c, "mounts")) for m in spec.mounts]
    # PATH is lxembed's (LXC passes none; both inits set a default PATH themselves).
    e += [("lxc.environment", f"{k}={v}", _OWN if k == "PATH" else (c, "environment"))
          for k, v in spec.environment.items()]
    # /sbin/init is what LXC runs anyway; another init (bind-host) needs the key.
    e.append(("lxc.init.cmd", " ".join(spec.init_cmd),
              _OWN if spec.init_cmd == ["/sbin/init"] else (c, "mode")))
    e += [
        ("lxc.signal.halt", spec.signals["halt"], _OWN),
        # Without the key, a reboot request is SIGINT: the Python init reboots on it.
        ("lxc.signal.reboot", spec.signals["reboot"], _OWN),
        ("lxc.start.auto", "1" if spec.start_auto else "0", (start, "auto")),
        ("lxc.start.delay", str(spec.start_delay), (start, "delay")),
        ("lxc.start.order", str(spec.start_order), (start, "order")),
    ]
    if spec.apparmor:
        e.append(("lxc.apparmor.profile", spec.apparmor, (c, "apparmor")))
    if spec.selinux:
        e.append(("lxc.selinux.context", spec.selinux, (c, "selinux")))
    e += [("lxc.idmap", " ".join(str(x) for x in m), (c, "idmap")) for m in spec.idmap]
    return e


def _raw(spec: ContainerSpec) -> _Said:
    out: _Said = []
    for line in spec.lxc_raw:
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip(), (_CONTAINER, "lxc_raw")))
    return out


def _networks(spec: ContainerSpec, legacy: bool) -> _Said:
    out: _Said = []
    # No network at all would configure nothing: say "empty" so the namespace has lo, up.
    for i, net in enumerate(spec.networks or [Network("empty")]):
        # Legacy: unnumbered, each network starting at its lxc.network.type line (LXC 1.x/2.0
        # know no indices).
        prefix = "lxc.network" if legacy else f"lxc.net.{i}"
        out += [(k, v, ("container.network", "type")) for k, v in _network(net, prefix, legacy)]
    return out


def _net_hooks(spec: ContainerSpec, rootfs: str) -> _Said:
    """A port of a host network description that LXC makes: its hooks set the host-side MAC
    and the port's rules (the scripts sit in hooks/ beside the config, outside the rootfs)."""
    bundle = str(Path(rootfs).parent)
    return [(key, f"{bundle}/{path}", ("container.network", "port"))
            for net in spec.networks if net.hooks
            for key, path in hook_files(net.hooks[0]).items()]


def _spelled(spec: ContainerSpec, rootfs: str) -> _Said:
    """Every setting in the spelling of spec.lxc_version, before the key check."""
    if not is_legacy(spec.lxc_version):
        return (_core(spec, rootfs) + _networks(spec, legacy=False) + _net_hooks(spec, rootfs)
                + _raw(spec))
    out: _Said = []
    for key, value, said in _core(spec, rootfs):
        if key == "lxc.rootfs.path":
            value = value[len("dir:") :]  # lxc-update-config puts the "dir:" back
        out.append((LEGACY_KEYS.get(key, key), value, said))
    return out + _networks(spec, legacy=True) + _net_hooks(spec, rootfs) + _raw(spec)


def version_entries(spec: ContainerSpec, rootfs: str) -> Tuple[Entries, List[str]]:
    """The config entries for spec.lxc_version, and lxembed's own keys that version lacks.

    Raises a UserError naming the recipe line of a setting the version cannot express.
    """
    version = spec.lxc_version
    name = ".".join(map(str, version))
    if version < OLDEST:
        raise UserError(f"{spec.where(_CONTAINER, 'lxc_version')}: LXC {name} is older than "
                        f"any LXC lxembed knows the keys of (1.0)")
    entries: Entries = []
    left_out: List[str] = []
    for key, value, said in _spelled(spec, rootfs):
        if knows(version, key):
            entries.append((key, value))
        elif said is _OWN:
            if key not in left_out:
                left_out.append(key)
        else:
            table, setting = said
            where = spec.where(table, setting)
            raise UserError(
                f"{where}: {'.'.join(filter(None, (table, setting)))} needs the LXC key {key}, "
                f"which LXC {name} does not have",
                hint="set lxc_version to the LXC the device runs if it is newer; otherwise the "
                     "setting cannot be had there (docs/containers.md, Per LXC version)",
            )
    return entries, left_out


def lxc_entries(spec: ContainerSpec, rootfs: str) -> Entries:
    """The entries written for spec.lxc_version, in order."""
    return version_entries(spec, rootfs)[0]


def render(entries: Entries, header: List[str]) -> str:
    return "".join(f"# {line}\n" for line in header) + "".join(
        f"{key} = {value}\n" for key, value in entries
    )


def lxc_config(spec: ContainerSpec, rootfs: str, board: str = "", recipe: str = "") -> str:
    """The config text for spec.lxc_version; `rootfs` is the absolute path of rootfs/."""
    legacy = is_legacy(spec.lxc_version)
    version = ".".join(map(str, spec.lxc_version))
    entries, left_out = version_entries(spec, rootfs)
    header = [
        f"lxembed: container {spec.name} ({board}/{recipe}), {spec.mode}, init {spec.init}",
        f"keys for LXC {version} ({'legacy, 1.x/2.x' if legacy else '3.0 and later'})",
        f"start: lxc-start -F -P RUNDIR -n {spec.name} -f THIS_FILE",
        f"stop: lxc-stop -P RUNDIR -n {spec.name} --rcfile THIS_FILE "
        f"(--rcfile makes it send {spec.signals['halt']})",
    ]
    if left_out:
        header.append(f"left out, unknown to LXC {version}: {', '.join(left_out)}")
    return render(entries, header)


def parse_lxc_config(text: str) -> Entries:
    """`key = value` lines of a config, comments and blanks dropped, order kept."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip()))
    return out
