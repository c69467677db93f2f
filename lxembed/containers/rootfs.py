"""The container's root tree: bind-host (only /etc, mount points, the host's /usr links) or the
image's own tree (self-contained), plus the mount points its mounts need."""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List

from ..config import Plan
from ..errors import UserError
from ..tree import DIR, FILE, HARDLINK, Entry, RootfsTree
from . import LXINIT_DIR, ContainerSpec

# Top-level host directories a bind-host container takes from the host, bound or linked.
HOST_TOP = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Origins whose files may be dropped silently: the generic skeleton made them for images that
# carry their own /usr; in bind-host the host's take their place.
_GENERIC = ("skeleton", "busybox applet", "init", "recipe", "modules", "")
# Skeleton parts a bind-host container has no use for (LXC sets up the network, the host's
# kernel has the modules): left out to keep the rootfs a few dozen KB.
_BIND_HOST_SKIP = (
    "/etc/network",
    "/etc/init.d",
    "/etc/modules",
    "/etc/fstab",
    "/etc/shells",
    "/mnt",
    "/home",
    "/var/log",
)
# What a container never uses from an image: /dev is made by the runtime, and the kernel (with
# its modules) is the host's. qemu boards add modules for their own kernel.
_RUNTIME_MADE = ("/dev/", "/lib/modules/", "/usr/lib/modules/")
LXINIT_SOURCE = Path(__file__).resolve().parents[1] / "init" / "lxinit.py"


@dataclass
class HostLayout:
    symlinks: Dict[str, str] = field(default_factory=dict)  # "/bin" -> "usr/bin"
    real_dirs: List[str] = field(default_factory=list)  # "/usr", and /bin... when not merged


def host_layout(host_root: str = "/") -> HostLayout:
    """How the host lays out /bin, /lib... : merged-/usr symlinks are mirrored, real dirs bound.

    A mount entry onto a symlinked /bin is refused by LXC ("Too many levels of symbolic links"),
    so each top-level directory is either one or the other, exactly as on the host.
    """
    layout = HostLayout()
    for name in HOST_TOP:
        path = os.path.join(host_root, name)
        if os.path.islink(path):
            target = os.readlink(path)
            # An absolute link (/usr/bin) would be read inside the container's root anyway;
            # a relative one keeps the rootfs usable from outside too.
            layout.symlinks["/" + name] = target.lstrip("/") if target.startswith("/") else target
        elif os.path.isdir(path):
            layout.real_dirs.append("/" + name)
    if "/usr" not in layout.real_dirs:
        raise UserError(f"{host_root}usr is not a directory on this host; bind-host needs it")
    return layout


def _bound(path: str, spec: ContainerSpec) -> bool:
    tops = set(spec.host_links) | {m.target for m in spec.mounts if m.is_bind}
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)


def bind_host_tree(tree: RootfsTree, plan: Plan, spec: ContainerSpec) -> RootfsTree:
    """Keep /etc and the other small directories of `tree`; the host provides the rest."""
    out = RootfsTree()
    epoch = plan.epoch
    for path, entry in tree:
        if path == "/" or path in ("/init", "/linuxrc") or path.startswith(_RUNTIME_MADE):
            continue  # the runtime makes /dev; /init is an initramfs entry point
        if entry.origin in _GENERIC and any(
            path == p or path.startswith(p + "/") for p in _BIND_HOST_SKIP
        ):
            continue
        if _bound(path, spec):
            if entry.origin not in _GENERIC and entry.type != DIR:
                top = "/" + path.split("/")[1]
                raise UserError(
                    f"{plan.recipe.path}: {path} (from {entry.origin}) would be "
                    f"hidden by the host's {top} in a bind-host container",
                    hint='put it under /etc, /opt or /srv, or use mode = "self-contained"',
                )
            continue
        out.entries[path] = entry
    for link, target in sorted(spec.host_links.items()):
        out.symlink(link, target, mtime=epoch, origin="host layout")
    _add_mount_points(out, spec, epoch)
    out.mkdir("/dev", mtime=epoch, origin="container")
    if spec.init == "python":
        _add_python_init(out, plan, spec)
    elif out.get("/etc/inittab") is None:
        out.write("/etc/inittab", _BUSYBOX_INITTAB.encode(), mtime=epoch, origin="container")
    out.clamp_mtimes(epoch)
    return out


# busybox init in a bind-host container: no getty, no console shell (the host's /bin/sh is
# dash); only the ready marker, so `lxc-stop` and the tests know when it is up.
_BUSYBOX_INITTAB = """\
# lxembed bind-host container: busybox init from the host
::sysinit:/bin/sh -c 'mkdir -p /run/lxembed && : > /run/lxembed/ready && echo "lxembed-init: ready"'
"""


def _add_mount_points(out: RootfsTree, spec: ContainerSpec, epoch: int) -> None:
    """Mount targets must exist before mounting; OCI runtimes will not always make them."""
    for m in spec.mounts:
        try:
            existing = out.get(out.resolve(m.target))
        except UserError:
            existing = None
        if existing is not None:
            continue
        if m.kind == "file":
            out.write(m.target, b"", mtime=epoch, origin="mount point")
        else:
            out.add(m.target, Entry(DIR, 0o755, mtime=epoch, origin="mount point"))


def init_config(plan: Plan, spec: ContainerSpec) -> dict:
    """The JSON the Python init reads (docs/init.md): hostname and the recipe's services.

    LXC configures the interfaces itself, so the init gets none; it still brings lo up.
    """
    services = []
    for svc in plan.recipe.settings["services"]:
        item = {k: v for k, v in svc.items() if v not in (None, [], {})}
        if item.get("user") == "root":
            item.pop("user")  # the init runs as root already: no passwd lookup needed
        services.append(item)
    return {"hostname": spec.hostname, "mode": "container", "services": services}


# The init's source is stored zlib-compressed (12 KB on disk instead of 36 KB: the rootfs stays
# under 100 KB) and run by this shim. zlib is built into CPython, so nothing else is imported;
# a zip app would cost 6 ms more per start (runpy imports importlib and friends).
LXINIT_SHIM = f"""\
# lxembed: runs the lxembed init (docs/init.md) from its compressed source
import zlib
with open("{LXINIT_DIR}/lxinit.py.z", "rb") as f:
    source = zlib.decompress(f.read())
exec(compile(source, "{LXINIT_DIR}/lxinit.py", "exec"), {{"__name__": "__main__"}})
"""


def _add_python_init(out: RootfsTree, plan: Plan, spec: ContainerSpec) -> None:
    if not LXINIT_SOURCE.is_file():
        raise UserError(
            f"{LXINIT_SOURCE} is missing: the Python init is not installed",
            hint='use init = "busybox" in [container]',
        )
    epoch = plan.epoch
    out.mkdir(LXINIT_DIR, mtime=epoch, origin="container")
    packed = zlib.compress(LXINIT_SOURCE.read_bytes(), 9)
    out.write(f"{LXINIT_DIR}/lxinit.py.z", packed, mtime=epoch, origin="lxembed init")
    out.write(f"{LXINIT_DIR}/lxinit", LXINIT_SHIM.encode(), mtime=epoch, origin="lxembed init")
    config = json.dumps(init_config(plan, spec), indent=1, sort_keys=True) + "\n"
    out.write(f"{LXINIT_DIR}/init.json", config.encode(), mtime=epoch, origin="lxembed init")


def _shift_ids(out: RootfsTree, spec: ContainerSpec) -> None:
    """With a user namespace, root inside is a plain uid outside: own the files by the mapped
    ids, or the container's root could not write its own /etc (LXC and OCI runtimes do not
    shift a directory rootfs themselves)."""

    def mapped(value: int, kind: str) -> int:
        for k, inside, outside, count in spec.idmap:
            if k == kind and inside <= value < inside + count:
                return outside + value - inside
        return 65534  # unmapped ids show up as nobody inside anyway

    for path, entry in list(out.entries.items()):
        out.entries[path] = replace(entry, uid=mapped(entry.uid, "u"), gid=mapped(entry.gid, "g"))


def container_tree(tree: RootfsTree, plan: Plan, spec: ContainerSpec) -> RootfsTree:
    """The tree a container's rootfs/ is written from; `tree` itself is never changed."""
    out = _container_tree(tree, plan, spec)
    if spec.idmap:
        _shift_ids(out, spec)
    return out


def _container_tree(tree: RootfsTree, plan: Plan, spec: ContainerSpec) -> RootfsTree:
    if spec.mode == "bind-host":
        return bind_host_tree(tree, plan, spec)
    out = RootfsTree(
        entries={
            p: e
            for p, e in tree.entries.items()
            if not p.startswith(_RUNTIME_MADE[1:]) and e.origin != "modules"
        }
    )
    init = out.get(out.resolve("/sbin/init")) if out.get("/sbin/init") else None
    if init is None or init.type not in (FILE, HARDLINK):
        raise UserError(
            f"{plan.recipe.path}: the image has no /sbin/init to run as the "
            f"container's init ({spec.init})",
            hint='add busybox-static to packages, or set init = "python"',
        )
    _add_mount_points(out, spec, plan.epoch)
    return out
