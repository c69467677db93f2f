"""A kernel's modules as a package or a directory holds them: each module's .modinfo
(dependencies, softdeps, aliases) read on demand, by canonical name. The rootfs layer resolves
what an image needs from this index (rootfs/modules.py)."""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..compression import decompress, kind_by_name
from ..errors import UserError

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
