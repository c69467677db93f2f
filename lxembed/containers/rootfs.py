"""The container's root tree, made from an image tree: bind-host (only /etc, mount points, the
root's /usr links, the init) or the image's own tree (self-contained), plus the mount points
its mounts need. The image tree itself is never changed."""

from __future__ import annotations

from dataclasses import replace

from ..config import Plan
from ..errors import UserError
from ..rootfs.python_init import install_init, write_init_config
from ..suites import MERGED_USR
from ..tree import DIR, FILE, HARDLINK, Entry, RootfsTree
from .spec import (
    HOST_PYTHON,
    LXINIT_CODE,
    LXINIT_CONFIG,
    LXINIT_DIR,
    LXINIT_SHIM,
    ContainerSpec,
)

# Origins whose files may be dropped silently: the generic skeleton made them for images that
# carry their own /usr; in bind-host the host's take their place.
_GENERIC = ("skeleton", "busybox applet", "init", "recipe", "modules", MERGED_USR, "")
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
        out.mkdir(LXINIT_DIR, mtime=epoch, origin="container")
        install_init(out, epoch, HOST_PYTHON, LXINIT_SHIM, LXINIT_CODE, "source")
        write_init_config(out, plan, spec, LXINIT_CONFIG)
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
    if spec.init == "python":
        write_init_config(out, plan, spec)  # the container's config, not the device's
    _add_mount_points(out, spec, plan.epoch)
    return out
