"""cpio "newc" (the initramfs format), written from the tree: rootless, reproducible."""

from __future__ import annotations

from typing import BinaryIO

from ..tree import BLOCK, CHAR, DIR, FILE, HARDLINK, SYMLINK, RootfsTree

_TRAILER = "TRAILER!!!"


def _header(out: BinaryIO, name: str, ino: int, mode: int, uid: int, gid: int, nlink: int,
            mtime: int, size: int, rmajor: int = 0, rminor: int = 0) -> None:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rmajor, rminor, len(encoded), 0)
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
    out.write(b"\0" * (-(110 + len(encoded)) % 4))


def write_cpio(tree: RootfsTree, out: BinaryIO) -> None:
    """Entries in sorted order with inode numbers 1..n; hard links are stored as copies."""
    for ino, (path, entry) in enumerate(tree, 1):
        name = "." if path == "/" else path[1:]
        if entry.type == HARDLINK:
            target = tree.get(entry.target)
            data = target.data if target is not None else b""
            mode = (entry.st_mode & ~0o170000) | 0o100000
        elif entry.type == FILE:
            data, mode = entry.data, entry.st_mode
        elif entry.type == SYMLINK:
            data, mode = entry.target.encode(), entry.st_mode
        else:
            data, mode = b"", entry.st_mode
        nlink = 2 if entry.type == DIR else 1
        dev = entry.type in (CHAR, BLOCK)
        _header(out, name, ino, mode, entry.uid, entry.gid, nlink, entry.mtime, len(data),
                entry.major if dev else 0, entry.minor if dev else 0)
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    _header(out, _TRAILER, 0, 0, 0, 0, 1, 0, 0)
    out.write(b"\0" * (-out.tell() % 512) if hasattr(out, "tell") else b"")
