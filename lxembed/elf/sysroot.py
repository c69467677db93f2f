"""Read a root filesystem from the inside: a host directory or a RootfsTree, symlinks kept inside.

A sysroot resolves every symlink against its own root, absolute targets included, exactly as
the kernel does inside a chroot; it never follows a link out onto the host (a `cp -L` of a
foreign tree's `/lib64/ld.so.1` silently copies the host's loader).
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import BinaryIO, Dict, List, Optional, Tuple

from ..tree import DIR, FILE, HARDLINK, SYMLINK, RootfsTree

MAX_SYMLINK_HOPS = 40  # the kernel's limit (ELOOP)

# What a lookup returns: ("file" | "dir" | "symlink" | "other", symlink target or "").
Node = Tuple[str, str]


@dataclass(frozen=True)
class Trace:
    """Where a path leads: its real path, its kind, and every symlink crossed on the way."""

    path: str  # the path as asked for
    real_path: str
    kind: str  # "file", "dir" or "other" (never "symlink": those are followed)
    links: Tuple[str, ...]  # symlinks crossed, in order (each a path whose parent is real)


def _split(path: str) -> List[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


class Sysroot(ABC):
    """A root filesystem seen from inside; paths are absolute paths in that filesystem."""

    label: str = "sysroot"

    def __init__(self) -> None:
        self._traces: Dict[str, Optional[Trace]] = {}

    # -- what an implementation provides ---------------------------------------------------
    @abstractmethod
    def lookup(self, path: str) -> Optional[Node]:
        """The node at `path` without following a final symlink; `path` has a real parent."""

    @abstractmethod
    def open(self, real_path: str) -> BinaryIO:
        """A readable binary stream of the regular file at a real path."""

    @abstractmethod
    def listdir(self, real_path: str) -> List[str]:
        """Names in the directory at a real path."""

    # -- derived ---------------------------------------------------------------------------
    def trace(self, path: str) -> Optional[Trace]:
        """Resolve `path` inside the root; None if it (or a directory on the way) is missing."""
        if path not in self._traces:
            self._traces[path] = self._trace(path)
        return self._traces[path]

    def _trace(self, path: str) -> Optional[Trace]:
        pending = _split(path)
        cur, kind, links, hops = "/", "dir", [], 0
        while pending:
            part = pending.pop(0)
            if kind != "dir":
                return None  # ENOTDIR
            if part == "..":
                cur = posixpath.dirname(cur)  # physical "..": from the real directory
                continue
            nxt = posixpath.join(cur, part)
            node = self.lookup(nxt)
            if node is None:
                return None
            kind, target = node
            if kind == "symlink":
                hops += 1
                if hops > MAX_SYMLINK_HOPS or not target:
                    return None
                links.append(nxt)
                if target.startswith("/"):
                    cur = "/"  # absolute targets restart at this root, not the host's
                pending = _split(target) + pending
                kind = "dir"  # what `cur` is now
                continue
            cur = nxt
        return Trace(path, cur, kind, tuple(links))

    def resolve(self, path: str) -> Optional[str]:
        found = self.trace(path)
        return found.real_path if found else None

    def is_file(self, path: str) -> bool:
        found = self.trace(path)
        return found is not None and found.kind == "file"

    def read(self, path: str) -> Optional[bytes]:
        found = self.trace(path)
        if found is None or found.kind != "file":
            return None
        with self.open(found.real_path) as stream:
            return stream.read()

    def glob(self, pattern: str) -> List[str]:
        """Shell-style glob inside the root (for ld.so.conf `include` lines)."""
        matches = ["/"]
        for part in _split(pattern):
            step = []
            for base in matches:
                if not any(c in part for c in "*?["):
                    step.append(posixpath.join(base, part))
                    continue
                real = self.resolve(base)
                if real is None or self.trace(base).kind != "dir":
                    continue
                names = self.listdir(real)
                step += [
                    posixpath.join(base, n)
                    for n in sorted(names)
                    if fnmatch.fnmatchcase(n, part) and (part[0] == "." or n[0] != ".")
                ]
            matches = step
        return [m for m in matches if self.trace(m) is not None]


class HostSysroot(Sysroot):
    """A directory on the host (an extracted package tree, a mounted image, or `/`)."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = os.path.abspath(root)
        self.label = self.root

    def host_path(self, path: str) -> str:
        return self.root.rstrip("/") + path if path != "/" else self.root

    def lookup(self, path: str) -> Optional[Node]:
        try:
            st = os.lstat(self.host_path(path))
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "symlink", os.readlink(self.host_path(path))
        if stat.S_ISDIR(st.st_mode):
            return "dir", ""
        return ("file" if stat.S_ISREG(st.st_mode) else "other"), ""

    def open(self, real_path: str) -> BinaryIO:
        return open(self.host_path(real_path), "rb")

    def listdir(self, real_path: str) -> List[str]:
        try:
            return os.listdir(self.host_path(real_path))
        except OSError:
            return []


class TreeSysroot(Sysroot):
    """A RootfsTree (packages extracted in memory, or an image read back)."""

    def __init__(self, tree: RootfsTree, label: str = "the image") -> None:
        super().__init__()
        self.tree = tree
        self.label = label

    def lookup(self, path: str) -> Optional[Node]:
        entry = self.tree.entries.get(path)
        if entry is None:
            return None
        if entry.type == SYMLINK:
            return "symlink", entry.target
        if entry.type == DIR:
            return "dir", ""
        return ("file" if entry.type in (FILE, HARDLINK) else "other"), ""

    def data(self, real_path: str) -> bytes:
        entry = self.tree.entries[real_path]
        if entry.type == HARDLINK:
            entry = self.tree.entries.get(entry.target, entry)
        return entry.data

    def open(self, real_path: str) -> BinaryIO:
        return io.BytesIO(self.data(real_path))

    def listdir(self, real_path: str) -> List[str]:
        prefix = real_path.rstrip("/") + "/"
        return [
            p[len(prefix) :]
            for p in self.tree.entries
            if p.startswith(prefix) and "/" not in p[len(prefix) :] and p != prefix
        ]
