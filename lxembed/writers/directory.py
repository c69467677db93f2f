"""Write the tree as a plain directory (for containers and inspection)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

from ..tree import DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, RootfsTree


def write_contents(tree: RootfsTree, root: Path, file_mode: int = 0o600,
                   fifos: bool = True) -> Tuple[List[Tuple[Path, Entry]], int]:
    """Create every directory, file, symlink, hard link (and FIFO) of the tree under `root`,
    never following a symlink; files get `file_mode`, nothing gets its owner or time yet.

    Returns what was made, (path on disk, entry) in tree order, and how many nodes were skipped
    (device nodes need mknod: the callers record or make them their own way).
    """
    made, links, skipped = [], [], 0
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for path, entry in tree:
        dest = root / path.lstrip("/") if path != "/" else root
        if entry.type == DIR:
            dest.mkdir(mode=0o755, exist_ok=True)
        elif entry.type == FILE:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(entry.data)
        elif entry.type == SYMLINK:
            os.symlink(entry.target, dest)
        elif entry.type == HARDLINK:
            links.append((root / entry.target.lstrip("/"), dest))
            continue
        elif entry.type == FIFO and fifos:
            os.mkfifo(dest, 0o600)
        else:
            skipped += 1
            continue
        made.append((dest, entry))
    for target, dest in links:  # once every target exists: /bin/ash sorts before /bin/busybox
        os.link(target, dest, follow_symlinks=False)
    return made, skipped


def write_dir(tree: RootfsTree, root: Path) -> int:
    """Create the tree under `root` without following any symlink; returns nodes skipped.

    Device nodes need root and mknod: they are skipped (the manifest records them; LXC and OCI
    runtimes make /dev themselves). Owners are applied only when running as root.
    """
    as_root = os.geteuid() == 0
    made, skipped = write_contents(tree, root)
    dirs = []
    for dest, entry in made:
        if entry.type == DIR:
            dirs.append((dest, entry))
            continue
        if as_root:
            os.chown(dest, entry.uid, entry.gid, follow_symlinks=False)
        if entry.type != SYMLINK:
            os.chmod(dest, entry.mode & 0o7777)
        os.utime(dest, (entry.mtime, entry.mtime), follow_symlinks=False)
    for dest, entry in reversed(dirs):  # last, so writing files did not change them again
        if as_root:
            os.chown(dest, entry.uid, entry.gid)
        os.chmod(dest, entry.mode & 0o7777)
        os.utime(dest, (entry.mtime, entry.mtime))
    return skipped
