"""One checked ContainerSpec from a recipe's [container] table, resolved against a root.

The LXC config (modern and legacy), the OCI bundle, the libvirt domain and the bind-host rootfs
are all written from this one model, so they cannot disagree. All semantic checks happen in
container_spec(), before anything is fetched or written, and each one names the recipe file and
line. A bind-host spec is resolved against the root it will run on (the build host's "/", or a
device image's own tree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..arch import Arch, host_arch
from ..config import Plan
from ..config.toml_lines import key_line
from ..errors import UserError
from ..net.ports import resolve_port_networks
from ..suites import get_suite
from .host_layout import HOST_ROOT, find_program, foreign_binfmt_ok, host_layout, resolve_in
from .network import Network, parse_networks

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # LXC starts the init with an empty PATH otherwise
LXINIT_DIR = "/.lxembed"  # bind-host: where the Python init's code and shim live
LXINIT_SHIM = f"{LXINIT_DIR}/lxinit"
LXINIT_CODE = f"{LXINIT_DIR}/lxinit.py.z"
LXINIT_CONFIG = f"{LXINIT_DIR}/init.json"
HOST_PYTHON = "/usr/bin/python3"
HOST_BUSYBOX = ("/usr/bin/busybox", "/bin/busybox")

# Device cgroup: deny everything, then allow what a shell, a console and ptys need.
MINIMAL_DEVICES = (
    ("c 1:3 rwm", "null"),
    ("c 1:5 rwm", "zero"),
    ("c 1:8 rwm", "random"),
    ("c 1:9 rwm", "urandom"),
    ("c 5:0 rwm", "tty"),
    ("c 5:1 rwm", "console"),
    ("c 5:2 rwm", "ptmx"),
    ("c 136:* rwm", "pts"),
)

# Signals per init. The Python init obeys LXC's defaults (SIGPWR halt, SIGINT reboot) and the
# OCI convention (SIGTERM stop). busybox init (1.35) maps SIGPWR and SIGUSR1 to halt, SIGTERM to
# reboot: SIGPWR keeps a plain `lxc-stop` (no --rcfile) working; under OCI, SIGTERM would reboot
# it, so stop uses SIGUSR1 and the runner sends that.
SIGNALS = {
    "python": {"halt": "SIGPWR", "reboot": "SIGINT", "stop": "SIGTERM"},
    "busybox": {"halt": "SIGPWR", "reboot": "SIGTERM", "stop": "SIGUSR1"},
}

# Linux capabilities in number order (capability.h), lower case without CAP_.
CAPABILITIES = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
)

_DEVICE_RULE = re.compile(r"^(a|[cb] (\d+|\*):(\d+|\*) [rwm]{1,3})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SIZE = re.compile(r"^(\d+)\s*([KMG]?)i?B?$", re.IGNORECASE)


@dataclass
class Mount:
    source: str
    target: str  # absolute, inside the container
    fstype: str  # "none" for binds
    options: List[str]
    kind: str = "dir"  # what the mount point is: dir or file
    optional: bool = False
    index: Optional[int] = None  # which [[container.mounts]] it is; None: lxembed's own

    @property
    def is_bind(self) -> bool:
        return "bind" in self.options or "rbind" in self.options


@dataclass
class ContainerSpec:
    name: str
    hostname: str
    mode: str  # bind-host | self-contained
    init: str  # python | busybox
    init_cmd: List[str]
    signals: Dict[str, str]
    arch: Arch
    tty: int = 0
    pty: int = 16
    cap_drop: List[str] = field(default_factory=list)
    devices: List[str] = field(default_factory=list)  # allow rules, minimal set first
    mount_auto: List[str] = field(default_factory=list)
    mounts: List[Mount] = field(default_factory=list)
    environment: Dict[str, str] = field(default_factory=dict)
    readonly: bool = False
    memory: Optional[int] = None  # bytes
    pids: Optional[int] = None
    nofile: Optional[int] = None
    start_auto: bool = False
    start_delay: int = 0
    start_order: int = 0
    apparmor: Optional[str] = None
    oci_target: str = "runtime"  # or "uxc": OpenWrt's procd/ujail (lxembed.containers.oci)
    selinux: Optional[str] = None
    idmap: List[Tuple[str, int, int, int]] = field(default_factory=list)
    networks: List[Network] = field(default_factory=list)
    lxc_version: Tuple[int, int] = (5, 0)
    lxc_raw: List[str] = field(default_factory=list)
    host_links: Dict[str, str] = field(default_factory=dict)  # bind-host: /bin -> usr/bin...
    # where(table, key, index=0) -> "recipe.toml:LINE", for errors found after resolving (LXC
    # versions, libvirt); index picks among [[tables]].
    where: Callable[..., str] = field(default=lambda table, key, index=0: "recipe", repr=False,
                                      compare=False)


def is_container_recipe(plan: Plan) -> bool:
    return plan.recipe.settings.get("container") is not None


def _where(plan: Plan, table: str, key: str, index: int = 0) -> str:
    return f"{plan.recipe.path}:{key_line(plan.recipe.text, table, key, index)}"


def parse_size(value: str) -> Optional[int]:
    """ "64M" -> bytes (powers of 1024), None when it is not a size."""
    m = _SIZE.match(str(value).strip())
    if not m:
        return None
    return int(m.group(1)) * 1024 ** " KMG".index(m.group(2).upper() or " ")


def _init(plan: Plan, c: dict, mode: str, root: Path) -> Tuple[str, List[str]]:
    recipe_init = plan.recipe.settings["init"]
    init = c["init"] or ("python" if mode == "bind-host" else recipe_init)
    if mode == "self-contained":
        if init != recipe_init:
            raise UserError(
                f"{_where(plan, 'container', 'init')}: container init = {init!r} but "
                f"the image's init is {recipe_init!r}; a self-contained container "
                f"runs the image's own /sbin/init",
                hint=f'set init = "{init}" at the top of the recipe instead',
            )
        return init, ["/sbin/init"]
    if init == "python":
        if find_program(root, [HOST_PYTHON]) is None:
            raise UserError(
                f"{_where(plan, 'container', 'mode')}: a bind-host container with the "
                f"Python init runs {HOST_PYTHON} of {root}, which is missing"
            )
        return init, [HOST_PYTHON, "-I", "-S", LXINIT_SHIM, "--config", LXINIT_CONFIG]
    busybox = find_program(root, list(HOST_BUSYBOX))
    if busybox is not None:
        return init, [busybox, "init"]
    raise UserError(
        f"{_where(plan, 'container', 'init')}: a bind-host container with busybox "
        f"init runs the busybox of {root}, which has none",
        hint='install busybox-static (or busybox) there, or use init = "python"',
    )


def _mounts(plan: Plan, c: dict, mode: str, root: Path) -> Tuple[List[Mount], Dict[str, str]]:
    mounts, links = [], {}
    if mode == "bind-host":
        layout = host_layout(root)
        links = layout.symlinks
        for d in layout.real_dirs:
            mounts.append(Mount(d, d, "none", ["ro", "bind", "nosuid", "nodev"]))
        for path in c["host_binds"]:
            if not str(path).startswith("/etc/"):
                raise UserError(
                    f"{_where(plan, 'container', 'host_binds')}: host_binds entry "
                    f"{path!r} is not under /etc (/usr and the rest are bound anyway)"
                )
            there = resolve_in(root, path)
            if there is not None:
                kind = "dir" if there.is_dir() else "file"
                mounts.append(Mount(path, path, "none", ["ro", "bind", "nosuid", "nodev"], kind))
    for path in c["tmpfs"]:
        mode_opt = "mode=1777" if path == "/tmp" else "mode=755"
        mounts.append(Mount("tmpfs", path, "tmpfs", ["rw", "nosuid", "nodev", mode_opt]))
    for i, m in enumerate(c["mounts"]):
        for key in ("source", "target"):
            if not m[key]:
                raise UserError(
                    f"{_where(plan, 'container.mounts', key, i)}: "
                    f"[[container.mounts]] #{i + 1} needs {key}"
                )
        if not m["target"].startswith("/"):
            raise UserError(
                f"{_where(plan, 'container.mounts', 'target', i)}: mount target "
                f"{m['target']!r} must be an absolute path inside the container"
            )
        options = list(m["options"])
        fstype = m["type"]
        kind = "dir"
        if fstype == "bind":
            fstype = "none"
            options = ["bind"] + [o for o in options if o not in ("bind", "rbind")]
            source = resolve_in(root, m["source"]) if m["source"].startswith("/") else None
            if source is not None and source.is_file():
                kind = "file"
        mounts.append(Mount(m["source"], m["target"], fstype, options, kind, m["optional"], i))
    return mounts, links


def container_spec(plan: Plan, root: Path = HOST_ROOT,
                   root_arch: Optional[Arch] = None) -> ContainerSpec:
    """The [container] table resolved against `root` and checked; one UserError naming file:line.

    `root` is the tree a bind-host container takes /usr (and the init) from: the build host's
    "/" by default, or a device image's tree; `root_arch` is the architecture of its programs
    (default: this host's).
    """
    root = Path(root)
    c = plan.recipe.settings.get("container")
    if c is None:
        raise UserError(
            f"{plan.recipe.path}: recipe {plan.recipe.name!r} has no [container] table",
            hint="add [container] (docs/containers.md) to build lxc, oci or libvirt",
        )
    mode = c["mode"]
    name = c["name"] or plan.recipe.name
    if not _NAME.match(name):
        raise UserError(
            f"{_where(plan, 'container', 'name')}: container name {name!r}: use "
            f"letters, digits, '.', '_' and '-'"
        )
    if mode == "bind-host":
        arch_there = root_arch or host_arch()
        if arch_there.debian != plan.arch.debian and not foreign_binfmt_ok(plan.arch, root):
            raise UserError(
                f'{_where(plan, "container", "mode")}: mode = "bind-host" binds the /usr of '
                f"{root}, but board {plan.board.name} is {plan.arch.debian} and {root} is "
                f"{arch_there.debian}",
                hint=f'use mode = "self-contained", or register a '
                f"binfmt_misc handler with the F flag for {plan.arch.qemu_user_path}",
            )
        for key in ("packages", "pick"):
            if plan.recipe.settings[key]:
                raise UserError(
                    f"{plan.recipe.line_of(key)}: a bind-host container uses the "
                    f"host's /usr; {key} would be hidden under it",
                    hint='drop them, or use mode = "self-contained"',
                )
    init, init_cmd = _init(plan, c, mode, root)
    devices = [rule for rule, _ in MINIMAL_DEVICES]
    for rule in c["devices"]:
        if not _DEVICE_RULE.match(str(rule)):
            raise UserError(
                f"{_where(plan, 'container', 'devices')}: device rule {rule!r}: "
                f'expected TYPE MAJOR:MINOR ACCESS, e.g. "c 10:200 rwm"'
            )
        devices.append(str(rule))
    limits = c["limits"] or {"memory": None, "pids": None, "nofile": None}
    memory = None
    if limits["memory"] is not None:
        memory = parse_size(limits["memory"])
        if not memory:
            raise UserError(
                f"{_where(plan, 'container.limits', 'memory')}: memory "
                f"{limits['memory']!r} is not a size (64M, 1G, 268435456)"
            )
    for key in ("pids", "nofile"):
        if limits[key] is not None and limits[key] < 1:
            raise UserError(f"{_where(plan, 'container.limits', key)}: {key} must be positive")
    idmap = []
    for entry in c["idmap"]:
        parts = str(entry).split()
        if len(parts) != 4 or parts[0] not in ("u", "g") or not all(p.isdigit() for p in parts[1:]):
            raise UserError(
                f"{_where(plan, 'container', 'idmap')}: idmap {entry!r}: expected "
                f'"u|g CONTAINER_ID HOST_ID COUNT"'
            )
        idmap.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    # Unset: the LXC of the board's suite, what a device image of it runs (5.0, 6.0).
    lxc_version = c["lxc_version"] or get_suite(plan.board.suite).lxc
    m = re.match(r"^(\d+)(?:\.(\d+))?", lxc_version)
    if not m:
        raise UserError(
            f"{_where(plan, 'container', 'lxc_version')}: lxc_version "
            f"{lxc_version!r} is not a version (2.0, 5.0)"
        )
    for line in c["lxc_raw"]:
        if not re.match(r"^lxc\.[a-z0-9_.]+\s*=", str(line)):
            raise UserError(
                f"{_where(plan, 'container', 'lxc_raw')}: lxc_raw line {line!r} is "
                f"not `lxc.KEY = VALUE`"
            )
    for cap in c["cap_drop"]:
        if str(cap) not in CAPABILITIES:
            raise UserError(
                f"{_where(plan, 'container', 'cap_drop')}: unknown capability "
                f"{cap!r} (write it in lower case without CAP_, e.g. sys_admin)"
            )
    def net_where(i: int, key: str) -> str:
        return _where(plan, "container.network", key, i)

    # A network naming a port of a host network description takes its keys from it.
    items, hooks = resolve_port_networks(c["network"], plan.recipe.path, net_where)
    networks = parse_networks(items, name, net_where)
    for net, hook in zip(networks, hooks):
        net.hooks = hook
    mounts, links = _mounts(plan, c, mode, root)
    start = c["start"] or {"auto": False, "delay": 0, "order": 0}
    return ContainerSpec(
        name=name,
        hostname=plan.recipe.settings["hostname"],
        mode=mode,
        init=init,
        init_cmd=init_cmd,
        signals=dict(SIGNALS[init]),
        arch=plan.arch,
        tty=c["tty"],
        pty=c["pty"],
        cap_drop=[str(x) for x in c["cap_drop"]],
        devices=devices,
        mount_auto=list(c["mount_auto"]),
        mounts=mounts,
        environment={"PATH": PATH, **{str(k): str(v) for k, v in c["environment"].items()}},
        readonly=c["readonly"],
        memory=memory,
        pids=limits["pids"],
        nofile=limits["nofile"],
        start_auto=start["auto"],
        start_delay=start["delay"],
        start_order=start["order"],
        apparmor=c["apparmor"],
        oci_target=c["oci_target"],
        selinux=c["selinux"],
        idmap=idmap,
        networks=networks,
        lxc_version=(int(m.group(1)), int(m.group(2) or 0)),
        lxc_raw=list(c["lxc_raw"]),
        host_links=links,
        where=lambda table, key, index=0: _where(plan, table, key, index),
    )
