"""OCI runtime bundle config.json (runtime-spec 1.0) from a ContainerSpec, for crun and runc,
and for OpenWrt's uxc (procd's ujail).

The same settings as the LXC config, in OCI terms. An OCI runtime makes no network devices
(that is a CNI plugin's job), so networks other than empty/none become a warning, not config.

Every capability set is written, the empty ones too: ujail (procd's jail/capabilities.c) takes
a set that is absent as ALL capabilities, where runc and crun take it as none. What else
ujail accepts, read from procd's jail/jail.c (parseOCI): an ociVersion beginning "1.0"; a
`process`, a `root` and a `mounts` array, each required; capability names that its build's
<linux/capability.h> defines (an unknown one fails the whole config).
"""

from __future__ import annotations

from typing import Any, Dict, List

from .spec import CAPABILITIES, ContainerSpec, Mount

OCI_VERSION = "1.0.2"
ANNOTATION_STOP = "org.lxembed.stop-signal"  # the runner reads it: OCI has no stop-signal key

# The runtimes' usual defaults (runc's `spec`): paths that leak host state or allow writes to it.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_BASE_MOUNTS = (
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
)


def _mount(m: Mount) -> Dict[str, Any]:
    if m.is_bind:
        # "bind", not "rbind": the host's submounts under /usr stay out, as with LXC.
        options = ["bind"] + [o for o in m.options if o not in ("bind", "rbind")]
        return {"destination": m.target, "type": "bind", "source": m.source, "options": options}
    return {
        "destination": m.target,
        "type": m.fstype,
        "source": m.source,
        "options": list(m.options),
    }


def _device(rule: str) -> Dict[str, Any]:
    if rule == "a":
        return {"allow": True, "access": "rwm"}
    kind, numbers, access = rule.split()
    major, minor = numbers.split(":")
    out: Dict[str, Any] = {"allow": True, "type": kind}
    if major != "*":
        out["major"] = int(major)
    if minor != "*":
        out["minor"] = int(minor)
    out["access"] = access
    return out


# The newest capability ujail can name: OpenWrt's kernels since 22.03 (Linux 5.10) define up to
# CAP_CHECKPOINT_RESTORE (40), and ujail refuses a name its headers lack.
UXC_LAST_CAPABILITY = "checkpoint_restore"


def capabilities(spec: ContainerSpec) -> List[str]:
    """Everything but cap_drop, like LXC (which keeps all capabilities it is not told to drop)."""
    dropped = set(spec.cap_drop)
    known = CAPABILITIES
    if spec.oci_target == "uxc":
        known = CAPABILITIES[: CAPABILITIES.index(UXC_LAST_CAPABILITY) + 1]
    return [f"CAP_{c.upper()}" for c in known if c not in dropped]


def oci_config(
    spec: ContainerSpec, rootfs: str = "rootfs", annotations: Dict[str, str] = None
) -> Dict[str, Any]:
    """The config.json document; `rootfs` is relative to the bundle directory."""
    caps = capabilities(spec)
    env = [f"{k}={v}" for k, v in spec.environment.items()]
    if "container" not in spec.environment:
        env.append("container=oci")  # the Python init picks its signal table from this
    process: Dict[str, Any] = {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": list(spec.init_cmd),
        "env": env,
        "cwd": "/",
        # All five, explicitly (see the docstring): nothing inherited, nothing ambient.
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                         "inheritable": [], "ambient": []},
        "noNewPrivileges": False,
    }
    if spec.nofile:
        process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": spec.nofile, "soft": spec.nofile}]
    # No key is OCI's "unconfined"; crun refuses the key itself, even "unconfined", on a host
    # without AppArmor ("AppArmor is not initialized correctly").
    if spec.apparmor and spec.apparmor != "unconfined":
        process["apparmorProfile"] = spec.apparmor
    if spec.selinux:
        process["selinuxLabel"] = spec.selinux
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    if not any(n.type == "none" for n in spec.networks):
        namespaces.append({"type": "network"})  # "none" shares the host's network
    resources: Dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}] + [_device(r) for r in spec.devices]
    }
    if spec.memory:
        resources["memory"] = {"limit": spec.memory}
    if spec.pids:
        resources["pids"] = {"limit": spec.pids}
    linux: Dict[str, Any] = {
        "namespaces": namespaces,
        "resources": resources,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if spec.idmap:
        namespaces.append({"type": "user"})
        for kind, key in (("u", "uidMappings"), ("g", "gidMappings")):
            linux[key] = [
                {"containerID": c, "hostID": h, "size": n} for k, c, h, n in spec.idmap if k == kind
            ]
    if spec.selinux:
        linux["mountLabel"] = spec.selinux
    notes = {
        "org.lxembed.container": spec.name,
        "org.lxembed.mode": spec.mode,
        "org.lxembed.init": spec.init,
        "org.lxembed.arch": spec.arch.oci,
        ANNOTATION_STOP: spec.signals["stop"],
    }
    if spec.arch.oci_variant:
        notes["org.lxembed.arch-variant"] = spec.arch.oci_variant
    notes.update(annotations or {})
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": spec.readonly},
        "hostname": spec.hostname,
        "mounts": [dict(m) for m in _BASE_MOUNTS] + [_mount(m) for m in spec.mounts],
        "linux": linux,
        "annotations": notes,
    }


def unsupported_networks(spec: ContainerSpec) -> List[str]:
    """Networks an OCI bundle cannot carry, for a warning."""
    return [f"{n.type} {n.name}" for n in spec.networks if n.type not in ("empty", "none")]
