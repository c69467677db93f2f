"""Kernel modules for qemu boards: the ones an image needs, their dependencies, modules.dep.

Dependencies come from each module's `.modinfo` section (`depends=`, and `softdep=pre:`),
read with pyelftools: no host depmod, no guest depmod, any architecture. modules.dep is written
the way `busybox depmod` writes it, so busybox modprobe in the guest loads dependencies first.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..compression import decompress, kind_by_name
from ..config import Plan
from ..errors import UserError
from ..log import info, step
from ..sources.kernel import Kernel, fetch_kernel
from ..suites import empty_root
from ..tree import RootfsTree

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


@dataclass(frozen=True)
class Module:
    name: str  # canonical name: dashes become underscores, as the kernel does
    relpath: str  # path under /lib/modules/KVER, always ending in .ko in the image
    data: bytes  # uncompressed ELF
    depends: Tuple[str, ...]
    aliases: Tuple[str, ...]


def canonical(name: str) -> str:
    return name.strip().replace("-", "_")


def read_modinfo(data: bytes, where: str = "") -> Dict[str, List[str]]:
    """The key=value strings of a module's .modinfo section (keys may repeat: alias)."""
    try:
        elf = ELFFile(io.BytesIO(data))
        section = elf.get_section_by_name(".modinfo")
    except ELFError as err:
        raise UserError(f"{where}: not a kernel module ({err})") from None
    info_: Dict[str, List[str]] = {}
    if section is None:
        return info_
    for item in section.data().split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            info_.setdefault(key, []).append(value)
    return info_


def _decompress(path: Path) -> bytes:
    return decompress(path.read_bytes(), kind_by_name(path.name), str(path))


class ModuleIndex:
    """The modules of one unpacked kernel, by canonical name; modinfo read on demand."""

    def __init__(self, modules_dir: Path):
        self.root = modules_dir
        self.files: Dict[str, Path] = {}
        for path in self._module_paths(modules_dir):
            suffix = next((s for s in _SUFFIXES if path.name.endswith(s)), None)
            if suffix:
                self.files.setdefault(canonical(path.name[: -len(suffix)]), path)
        builtin = modules_dir / "modules.builtin"
        self.builtin = set()
        if builtin.exists():
            self.builtin = {
                canonical(posixpath.basename(line.strip())[: -len(".ko")])
                for line in builtin.read_text().splitlines()
                if line.strip()
            }
        self._cache: Dict[str, Module] = {}
        # Modules whose softdeps are being looked up: 6.12's crypto modules name each other
        # ("softdep=pre: ..." both ways), and a provider already on the way is not searched.
        self._resolving: set = set()

    def _provider(self, name: str) -> List[str]:
        """The module a softdep names: a module of that name, or the generic crypto modules
        whose aliases provide it (libcrc32c's `softdep=pre: crc32c` means crc32c_generic;
        arch-specific ones are left out: they refuse CPUs without the instructions)."""
        if canonical(name) in self.files:
            return [name]
        wanted = {name, f"crypto-{name}"}
        found = []
        for module, path in sorted(self.files.items()):
            rel = str(path.relative_to(self.root))
            if (not rel.startswith("kernel/crypto/") or module == canonical(name)
                    or module in self._resolving):
                continue
            provider = self.get(module)
            if provider is not None and wanted & set(provider.aliases):
                found.append(module)
        return found

    @staticmethod
    def _module_paths(modules_dir: Path) -> List[Path]:
        """Every module file: from modules.order (one read; a walk of ~3,700 files costs
        0.1 s on every build), else by walking the tree."""
        order = modules_dir / "modules.order"
        if order.exists():  # lists .ko names; get() finds a compressed file behind one
            return [modules_dir / line for line in order.read_text().split()]
        return sorted(modules_dir.rglob("*.ko*"))

    def get(self, name: str) -> Optional[Module]:
        name = canonical(name)
        if name in self._cache:
            return self._cache[name]
        path = self.files.get(name)
        if path is None:
            return None
        if not path.exists():  # modules.order says .ko; the package may ship .ko.xz
            path = next((p for p in (path.with_name(path.name + s[3:]) for s in _SUFFIXES)
                         if p.exists()), path)
        data = _decompress(path)
        modinfo = read_modinfo(data, str(path))
        depends = [d for v in modinfo.get("depends", []) for d in v.split(",") if d]
        # softdep "pre:" modules must be loaded first too (crc32c for btrfs, ...); busybox
        # modprobe knows nothing of softdeps, so they become ordinary dependencies here.
        self._resolving.add(name)
        try:
            for soft in modinfo.get("softdep", []):
                words = soft.split()
                pre = False
                for word in words:
                    if word.endswith(":"):
                        pre = word == "pre:"
                    elif pre:
                        depends.extend(self._provider(word))
        finally:
            self._resolving.discard(name)
        rel = str(path.relative_to(self.root))
        rel = rel[: -len(next(s for s in _SUFFIXES if rel.endswith(s)))] + ".ko"
        module = Module(
            name,
            rel,
            data,
            tuple(dict.fromkeys(canonical(d) for d in depends)),
            tuple(modinfo.get("alias", [])),
        )
        self._cache[name] = module
        return module


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
