"""Pick files out of package contents: the files asked for, their exact ELF closure, nothing else.

Recipes say `pick = ["/usr/bin/python3.11", ...]`; the image then holds those files, every
library and loader they load (with the symlinks the loader goes through), the data paths
listed, and the parent directories of all of these, each with its owner and mode.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace
from typing import List, Set

from ..arch import Arch
from ..errors import UserError
from ..tree import DIR, FILE, HARDLINK, SYMLINK, Entry, RootfsTree, normpath
from .closure import NOT_FOR_THE_CPU, elf_closure
from .identify import identify, is_elf
from .sysroot import TreeSysroot

_GLOB_CHARS = "*?["


class _Copier:
    """Copies entries from the source tree to the picked tree, keeping paths exact."""

    def __init__(self, source: RootfsTree, sysroot: TreeSysroot) -> None:
        self.source = source
        self.sysroot = sysroot
        self.out = RootfsTree()
        self.out.entries["/"] = replace(source.entries.get("/", self.out.entries["/"]))
        self.elf_files: List[str] = []  # programs and libraries copied (real paths)
        self._dirs_done: Set[str] = set()

    def entry(self, path: str) -> None:
        """Copy one entry (no following), with its parent directories."""
        if path in self.out.entries:
            return
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in self.out.entries:
            self.out.entries[parent] = replace(self.source.entries.get(parent, Entry(DIR, 0o755)))
            parent = posixpath.dirname(parent)
        entry = self.source.entries[path]
        self.out.entries[path] = replace(entry)
        if entry.type == HARDLINK and entry.target in self.source.entries:
            self.entry(entry.target)  # the data lives at the first name
        elif entry.type == FILE and _runs_as_code(entry.data, path):
            self.elf_files.append(path)

    def path(self, path: str) -> str:
        """Copy what a path leads to, and every symlink on the way; returns the real path."""
        trace = self.sysroot.trace(path)
        if trace is None:
            raise UserError(f"{path} not found in {self.sysroot.label}")
        for link in trace.links:
            self.entry(link)
        if trace.real_path != "/":
            self.entry(trace.real_path)
        return trace.real_path

    def tree(self, path: str) -> None:
        """Copy a directory recursively; symlinks in it bring the files they point to."""
        real = self.path(path)
        if self.source.entries[real].type != DIR or real in self._dirs_done:
            return
        self._dirs_done.add(real)
        prefix = real.rstrip("/") + "/"
        for sub, entry in list(self.source.entries.items()):
            if not sub.startswith(prefix):
                continue
            self.entry(sub)
            if entry.type == SYMLINK:
                trace = self.sysroot.trace(sub)
                if trace is not None and trace.kind == "file":
                    self.path(sub)


def _runs_as_code(data: bytes, path: str) -> bool:
    """An executable or shared object whose libraries the image must carry."""
    if not is_elf(data[:4]) or path.startswith(NOT_FOR_THE_CPU):
        return False
    return identify(data, path, dynamic=False).elf_type in ("ET_EXEC", "ET_DYN")


def _expand(sysroot: TreeSysroot, pattern: str, what: str) -> List[str]:
    pattern = normpath(pattern)
    if any(c in pattern for c in _GLOB_CHARS):
        matches = sysroot.glob(pattern)
    else:
        matches = [pattern] if sysroot.trace(pattern) is not None else []
    if not matches:
        raise UserError(
            f"{what} {pattern} matches nothing in {sysroot.label}",
            hint="check the path, and that its package is listed in the recipe",
        )
    return matches


def pick_files(
    source: RootfsTree, picks: List[str], data_paths: List[str], arch: Arch
) -> RootfsTree:
    """A new tree with the picked files, their exact ELF closure and the data paths.

    Picks and data paths may be globs. A picked directory is copied like a data path. ELF
    files inside data paths (Python extension modules, plugins) bring their libraries too.
    A missing library, or an ELF for another architecture, is a UserError.
    """
    sysroot = TreeSysroot(source, label="the recipe's packages")
    copier = _Copier(source, sysroot)
    for pattern in picks:
        for path in _expand(sysroot, pattern, "pick"):
            if sysroot.trace(path).kind == "dir":
                copier.tree(path)
            else:
                copier.path(path)
    for pattern in data_paths:
        for path in _expand(sysroot, pattern, "data path"):
            copier.tree(path)
    closure = elf_closure(sysroot, sorted(set(copier.elf_files)), arch)
    closure.raise_for_missing()
    for program in closure.programs:  # every path a loader opens, with its symlinks
        for obj in program.objects:
            copier.path(obj.path)
    return copier.out
