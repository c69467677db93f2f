"""Cross-architecture ELF toolkit: identify binaries, follow their library closure, pick files."""

from .closure import Closure, HostSysroot, Sysroot, TreeSysroot, check_tree_arch, elf_closure
from .identify import ElfInfo, identify, is_elf, runs_on
from .pick import pick_files

__all__ = [
    "Closure",
    "ElfInfo",
    "HostSysroot",
    "Sysroot",
    "TreeSysroot",
    "check_tree_arch",
    "elf_closure",
    "identify",
    "is_elf",
    "pick_files",
    "runs_on",
]
