"""LXC container configs from a ContainerSpec: modern keys (LXC >= 3.0) or legacy ones (1.x/2.x).

Both spellings come from one list of settings, so a legacy config converted by
`lxc-update-config` gives back the modern one, except for the keys old LXC never had.
"""

from __future__ import annotations

from typing import List, Tuple

from . import ContainerSpec, Mount
from .network import Network

# Keys only LXC >= 3 knows; a legacy config leaves them out (LXC 2 had no cgroup2 keys and
# always managed the rootfs).
MODERN_ONLY = ("lxc.rootfs.managed", "lxc.cgroup2.")

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


def _core(spec: ContainerSpec, rootfs: str) -> Entries:
    e: Entries = [
        ("lxc.uts.name", spec.hostname),
        ("lxc.arch", spec.arch.lxc),
        ("lxc.rootfs.path", f"dir:{rootfs}"),
        # 0: lxc-destroy must never delete a directory lxembed wrote.
        ("lxc.rootfs.managed", "0"),
    ]
    if spec.readonly:
        e.append(("lxc.rootfs.options", "ro"))
    e += [("lxc.autodev", "1"), ("lxc.tty.max", str(spec.tty)), ("lxc.pty.max", str(spec.pty))]
    if spec.cap_drop:
        e.append(("lxc.cap.drop", " ".join(spec.cap_drop)))
    # Both cgroup versions: LXC applies the keys of the hierarchy the host has and ignores the
    # others ("Ignoring cgroup2 limits on legacy cgroup system"), so one config fits both.
    for v in ("cgroup", "cgroup2"):
        e.append((f"lxc.{v}.devices.deny", "a"))
        e += [(f"lxc.{v}.devices.allow", rule) for rule in spec.devices]
    if spec.memory:
        e += [
            ("lxc.cgroup.memory.limit_in_bytes", str(spec.memory)),
            ("lxc.cgroup2.memory.max", str(spec.memory)),
        ]
    if spec.pids:
        e += [("lxc.cgroup.pids.max", str(spec.pids)), ("lxc.cgroup2.pids.max", str(spec.pids))]
    if spec.nofile:
        e.append(("lxc.prlimit.nofile", str(spec.nofile)))
    if spec.mount_auto:
        e.append(("lxc.mount.auto", " ".join(spec.mount_auto)))
    e += [("lxc.mount.entry", _mount_entry(m)) for m in spec.mounts]
    e += [("lxc.environment", f"{k}={v}") for k, v in spec.environment.items()]
    e += [
        ("lxc.init.cmd", " ".join(spec.init_cmd)),
        ("lxc.signal.halt", spec.signals["halt"]),
        ("lxc.signal.reboot", spec.signals["reboot"]),
        ("lxc.start.auto", "1" if spec.start_auto else "0"),
        ("lxc.start.delay", str(spec.start_delay)),
        ("lxc.start.order", str(spec.start_order)),
    ]
    if spec.apparmor:
        e.append(("lxc.apparmor.profile", spec.apparmor))
    if spec.selinux:
        e.append(("lxc.selinux.context", spec.selinux))
    e += [("lxc.idmap", " ".join(str(x) for x in m)) for m in spec.idmap]
    return e


def _raw(spec: ContainerSpec) -> Entries:
    out = []
    for line in spec.lxc_raw:
        key, _, value = line.partition("=")
        out.append((key.strip(), value.strip()))
    return out


def lxc_entries(spec: ContainerSpec, rootfs: str) -> Entries:
    """The settings in modern spelling, in the order they are written."""
    e = _core(spec, rootfs)
    # No network at all would configure nothing: say "empty" so the namespace has lo, up.
    for i, net in enumerate(spec.networks or [Network("empty")]):
        e += _network(net, f"lxc.net.{i}", legacy=False)
    return e + _raw(spec)


def legacy_entries(spec: ContainerSpec, rootfs: str) -> Entries:
    """The same settings spelled for LXC 1.x/2.x."""
    e: Entries = []
    for key, value in _core(spec, rootfs):
        if key.startswith(MODERN_ONLY):
            continue
        if key == "lxc.rootfs.path":
            value = value[len("dir:") :]  # lxc-update-config puts the "dir:" back
        if key == "lxc.init.cmd" and spec.lxc_version < (2, 0):
            continue  # LXC 1.x has no init_cmd: it runs /sbin/init, or lxc-start's command
        e.append((LEGACY_KEYS.get(key, key), value))
    # Unnumbered: each network starts at its lxc.network.type line (LXC 1.x/2.0 know no indices).
    for net in spec.networks or [Network("empty")]:
        e += _network(net, "lxc.network", legacy=True)
    return e + _raw(spec)


def render(entries: Entries, header: List[str]) -> str:
    return "".join(f"# {line}\n" for line in header) + "".join(
        f"{key} = {value}\n" for key, value in entries
    )


def lxc_config(spec: ContainerSpec, rootfs: str, board: str = "", recipe: str = "") -> str:
    """The config text for spec.lxc_version; `rootfs` is the absolute path of rootfs/."""
    legacy = is_legacy(spec.lxc_version)
    version = ".".join(map(str, spec.lxc_version))
    header = [
        f"lxembed: container {spec.name} ({board}/{recipe}), {spec.mode}, init {spec.init}",
        f"keys for LXC {version} ({'legacy, 1.x/2.x' if legacy else '3.0 and later'})",
        f"start: lxc-start -F -P RUNDIR -n {spec.name} -f THIS_FILE",
        f"stop: lxc-stop -P RUNDIR -n {spec.name} --rcfile THIS_FILE "
        f"(--rcfile makes it send {spec.signals['halt']})",
    ]
    entries = legacy_entries(spec, rootfs) if legacy else lxc_entries(spec, rootfs)
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
