"""RootfsTree: the in-memory root filesystem every image is made from.

Paths are absolute, normalised POSIX strings ("/usr/bin/busybox"). Device nodes, owners and
modes exist only here; writers serialise the tree and never look at the host for content.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Dict, Optional

from .errors import UserError

FILE, DIR, SYMLINK, HARDLINK, CHAR, BLOCK, FIFO = (
    "file", "dir", "symlink", "hardlink", "char", "block", "fifo")

_TYPE_BITS = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK,
              HARDLINK: stat.S_IFREG, CHAR: stat.S_IFCHR, BLOCK: stat.S_IFBLK,
              FIFO: stat.S_IFIFO}


@dataclass
class Entry:
    type: str
    mode: int = 0o644  # permission bits only (incl. setuid/setgid/sticky)
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    data: bytes = b""  # file content
    target: str = ""  # symlink target, or hardlink target path
    major: int = 0
    minor: int = 0
    origin: str = ""  # where it came from (package name, "skeleton", overlay), for reports

    @property
    def st_mode(self) -> int:
        return _TYPE_BITS[self.type] | (self.mode & 0o7777)

    @property
    def size(self) -> int:
        return len(self.data) if self.type == FILE else (
            len(self.target.encode()) if self.type == SYMLINK else 0)

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.type == FILE else ""


def normpath(path: str) -> str:
    """Normalise a path inside the image; refuse anything that climbs above the root."""
    if "\0" in path:
        raise UserError(f"path {path!r} contains a NUL byte")
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise UserError(f"path {path!r} escapes the root filesystem ('..')")
        parts.append(part)
    return "/" + "/".join(parts)


def symlink_escapes(link_path: str, target: str) -> bool:
    """True if a relative symlink target climbs above the root from where the link sits."""
    if target.startswith("/"):
        return False  # absolute targets are read inside the image's root
    depth = len([p for p in posixpath.dirname(link_path).split("/") if p])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


@dataclass
class RootfsTree:
    entries: Dict[str, Entry] = field(default_factory=lambda: {"/": Entry(DIR, 0o755)})

    # -- lookups ---------------------------------------------------------------------------
    def __contains__(self, path: str) -> bool:
        return normpath(path) in self.entries

    def get(self, path: str) -> Optional[Entry]:
        """The entry at `path`, through symlinked directories on the way (lstat's rule: a
        merged-/usr image's /bin/busybox is its /usr/bin/busybox); the last is not followed."""
        path = normpath(path)
        entry = self.entries.get(path)
        if entry is None and path != "/":
            try:
                real = self.resolve(path, follow_last=False)
            except UserError:
                return None
            if real != path:
                entry = self.entries.get(real)
        return entry

    def __iter__(self) -> Iterator[tuple]:
        """(path, entry) in sorted order: the order every writer uses."""
        for path in sorted(self.entries):
            yield path, self.entries[path]

    def __len__(self) -> int:
        return len(self.entries)

    def resolve(self, path: str, follow_last: bool = True, _depth: int = 0) -> str:
        """Resolve symlinks inside the tree (never on the host). Returns a normalised path."""
        if _depth > 40:
            raise UserError(f"too many levels of symbolic links resolving {path}")
        parts = [p for p in normpath(path).split("/") if p]
        cur = "/"
        for i, part in enumerate(parts):
            nxt = posixpath.join(cur, part)
            entry = self.entries.get(nxt)
            last = i == len(parts) - 1
            if entry is not None and entry.type == SYMLINK and (follow_last or not last):
                if symlink_escapes(nxt, entry.target):
                    raise UserError(f"symlink {nxt} -> {entry.target} points outside the root")
                base = "/" if entry.target.startswith("/") else cur
                rest = "/".join(parts[i + 1:])
                joined = posixpath.join(base, entry.target, rest) if rest else posixpath.join(
                    base, entry.target)
                return self.resolve(_collapse(joined), follow_last, _depth + 1)
            cur = nxt
        return cur

    def read(self, path: str) -> Optional[bytes]:
        """Content of a regular file, following symlinks in the tree; None if absent."""
        try:
            entry = self.entries.get(self.resolve(path))
        except UserError:
            return None
        if entry is not None and entry.type == HARDLINK:
            entry = self.entries.get(entry.target)
        return entry.data if entry is not None and entry.type == FILE else None

    # -- changes ---------------------------------------------------------------------------
    def add(self, path: str, entry: Entry, replace_ok: bool = True) -> str:
        """Add an entry; parents are resolved through symlinks already in the tree."""
        path = normpath(path)
        if path == "/":
            if entry.type == DIR:
                self.entries["/"] = replace(entry)
            return path
        if entry.type == SYMLINK and symlink_escapes(path, entry.target):
            raise UserError(f"symlink {path} -> {entry.target} points outside the root"
                            + (f" (from {entry.origin})" if entry.origin else ""))
        parent = self.resolve(posixpath.dirname(path))
        self._ensure_dir(parent, entry.mtime)
        path = posixpath.join(parent, posixpath.basename(path))
        old = self.entries.get(path)
        if old is not None:
            if old.type == DIR and entry.type == DIR:
                return path  # first definition wins for directories
            if old.type == SYMLINK and entry.type == DIR and self._is_dir(path):
                return path  # dpkg's rule: a directory keeps the symlink to one (merged /usr)
            if not replace_ok:
                raise UserError(f"{path} already exists in the image")
            if old.type == DIR and self._has_children(path):
                # The archive would hold a file and then entries below it: refuse.
                raise UserError(f"{path} is a directory with content in the image; a "
                                f"{entry.type} cannot replace it"
                                + (f" (from {entry.origin})" if entry.origin else ""))
        self.entries[path] = entry
        return path

    def _is_dir(self, path: str) -> bool:
        try:
            entry = self.entries.get(self.resolve(path))
        except UserError:
            return False
        return entry is not None and entry.type == DIR

    def _has_children(self, path: str) -> bool:
        prefix = path.rstrip("/") + "/"
        return any(p.startswith(prefix) for p in self.entries)

    def _ensure_dir(self, path: str, mtime: int) -> None:
        if path == "/":
            return
        entry = self.entries.get(path)
        if entry is not None:
            if entry.type != DIR:
                raise UserError(f"{path} is a {entry.type}, not a directory, in the image")
            return
        self._ensure_dir(posixpath.dirname(path), mtime)
        self.entries[path] = Entry(DIR, 0o755, mtime=mtime)

    def mkdir(self, path: str, mode: int = 0o755, **kw) -> str:
        return self.add(path, Entry(DIR, mode, **kw))

    def write(self, path: str, data: bytes, mode: int = 0o644, **kw) -> str:
        return self.add(path, Entry(FILE, mode, data=data, **kw))

    def symlink(self, path: str, target: str, **kw) -> str:
        return self.add(path, Entry(SYMLINK, 0o777, target=target, **kw))

    def remove(self, path: str) -> None:
        """Remove a path and, for a directory, everything below it."""
        path = normpath(path)
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.entries if p == path or p.startswith(prefix)]:
            if p != "/":
                del self.entries[p]

    def exclude(self, patterns) -> int:
        """Drop entries matching glob patterns ("/usr/share/doc/*"); returns how many went."""
        gone = [p for p in self.entries if p != "/" and any(
            fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p + "/", pat) for pat in patterns)]
        for p in gone:
            self.entries.pop(p, None)
        return len(gone)

    def clamp_mtimes(self, epoch: int) -> None:
        """SOURCE_DATE_EPOCH: nothing in the image is newer than the epoch."""
        for entry in self.entries.values():
            if entry.mtime > epoch or entry.mtime <= 0:
                entry.mtime = epoch

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.type == FILE)


def _collapse(path: str) -> str:
    """Collapse '..' without going above '/' (the kernel's rule inside a chroot)."""
    out = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)
