"""Kernel modules for qemu boards: the ones an image needs, their dependencies, modules.dep.

Dependencies come from each module's `.modinfo` section (`depends=`, and `softdep=pre:`),
read with pyelftools: no host depmod, no guest depmod, any architecture. modules.dep is written
the way `busybox depmod` writes it, so busybox modprobe in the guest loads dependencies first.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from ..config import Plan
from ..errors import UserError
from ..log import info, step
from ..sources.kernel import Kernel, fetch_kernel
from ..sources.kernel_modules import Module, ModuleIndex, canonical
from ..suites import empty_root
from ..tree import RootfsTree


def resolve_modules(index: ModuleIndex, wanted: Sequence[str]) -> List[Module]:
    """`wanted` and everything they depend on, in load order (dependencies first).

    Names the kernel has built in are skipped (the virtio core on arm); an unknown name is an
    error, because a module the image asks for and silently lacks fails only at boot.
    """
    order: List[Module] = []
    state: Dict[str, str] = {}

    def visit(name: str, chain: Tuple[str, ...]) -> None:
        name = canonical(name)
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise UserError(
                f"kernel modules depend on each other in a loop: {' -> '.join(chain + (name,))}"
            )
        module = index.get(name)
        if module is None:
            if name in index.builtin:
                state[name] = "done"
                return
            needed = f" (needed by {chain[-1]})" if chain else ""
            raise UserError(
                f"kernel module {name!r}{needed} is not in {index.root.name}",
                hint="check the name with `modinfo` on a Debian system, or drop it",
            )
        state[name] = "visiting"
        for dep in module.depends:
            visit(dep, chain + (name,))
        state[name] = "done"
        order.append(module)

    for name in wanted:
        visit(name, ())
    return order


def _load_order(name: str, by_name: Dict[str, Module], load: Dict[str, None]) -> None:
    """Add the dependencies of `name` to `load`, dependencies first (post-order)."""
    for dep in by_name[name].depends:
        if dep in by_name and dep not in load:
            _load_order(dep, by_name, load)
            load[dep] = None


def modules_dep(modules: Sequence[Module]) -> str:
    """modules.dep as `busybox depmod` writes it: every transitive dependency on the line, in
    reverse load order (modprobe loads the list from its end, so the deepest one comes last)."""
    by_name = {m.name: m for m in modules}
    lines = []
    for module in modules:
        load: Dict[str, None] = {}
        _load_order(module.name, by_name, load)
        deps = "".join(f" {by_name[d].relpath}" for d in reversed(load))
        lines.append(f"{module.relpath}:{deps}")
    return "\n".join(lines) + "\n"


def modules_alias(modules: Sequence[Module]) -> str:
    return "".join(f"alias {alias} {m.name}\n" for m in modules for alias in m.aliases)


def wanted_modules(plan: Plan) -> List[str]:
    """Board modules, then the NIC's, then the recipe's: one list, first mention kept."""
    qemu = plan.board.qemu or {}
    names = list(qemu.get("modules") or [])
    if plan.board.qemu is not None:  # qemu's NIC; a hardware board with its own kernel has none
        names += list(plan.arch.nic_modules)
    names += list(plan.recipe.settings.get("modules") or [])
    if plan.recipe.settings.get("watchdog") and qemu.get("watchdog"):
        names.append(qemu["watchdog"])  # the qemu device's driver
    return list(dict.fromkeys(canonical(n) for n in names))


def kernel_modules_tree(plan: Plan, mirror: Optional[str] = None,
                        extra: Sequence[str] = ()) -> RootfsTree:
    """The modules of a qemu board's kernel, as a tree of their own.

    It is written as a second initramfs segment (modules.cpio*) that the runner appends to
    the rootfs one: the kernel unpacks concatenated archives in order. The userland image stays
    kernel-agnostic (and a busybox image stays under 1 MB), and modules belong to the kernel's
    arch anyway (armel images boot the armhf kernel). `extra`: modules a format needs (a disk's
    storage drivers).
    """
    # A merged-/usr image's segment has its /lib -> usr/lib too: the kernel unpacking a
    # directory `lib` over the rootfs segment's link would replace the link with it.
    tree = empty_root(plan.board.suite, plan.arch)
    with step("kernel modules"):
        add_kernel_modules(tree, plan, mirror, extra=extra)
    tree.clamp_mtimes(plan.epoch)
    return tree


def add_kernel_modules(
    tree: RootfsTree, plan: Plan, mirror: Optional[str] = None, kernel: Optional[Kernel] = None,
    extra: Sequence[str] = (),
) -> Kernel:
    """Put the modules `plan` needs (with dependencies) under /lib/modules/KVER and write
    modules.dep, modules.alias and /etc/modules (the load order rcS feeds to modprobe)."""
    kernel = kernel or fetch_kernel(plan.board, mirror)
    wanted = list(dict.fromkeys(wanted_modules(plan) + [canonical(n) for n in extra]))
    modules = resolve_modules(ModuleIndex(kernel.modules), wanted)
    base = f"/lib/modules/{kernel.release}"
    origin = f"{kernel.package} {kernel.version}"
    kw = {"mtime": plan.epoch, "origin": origin}
    tree.mkdir(base, **kw)
    for module in modules:
        tree.write(f"{base}/{module.relpath}", module.data, **kw)
    tree.write(f"{base}/modules.dep", modules_dep(modules).encode(), **kw)
    tree.write(f"{base}/modules.alias", modules_alias(modules).encode(), **kw)
    builtin = kernel.modules / "modules.builtin"
    if builtin.exists():
        # busybox modprobe reads it: `modprobe virtio` on arm (built in) succeeds quietly.
        tree.write(f"{base}/modules.builtin", builtin.read_bytes(), **kw)
    order = "".join(f"{m.name}\n" for m in modules)
    tree.write(
        "/etc/modules",
        ("# lxembed: load order (dependencies first)\n" + order).encode(),
        mtime=plan.epoch,
        origin="modules",
    )
    size = sum(len(m.data) for m in modules)
    info(
        f"modules from {kernel.package}: {', '.join(m.name for m in modules) or 'none'} "
        f"({size / 1e6:.2f} MB)"
    )
    return kernel
