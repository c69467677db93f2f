"""Write the tree as a plain directory (for containers and inspection)."""

from __future__ import annotations

import os
from pathlib import Path

from ..tree import DIR, FIFO, FILE, HARDLINK, SYMLINK, RootfsTree


def write_dir(tree: RootfsTree, root: Path) -> int:
    """Create the tree under `root` without following any symlink; returns nodes skipped.

    Device nodes need root and mknod: they are skipped (the manifest records them; LXC and OCI
    runtimes make /dev themselves). Owners are applied only when running as root.
    """
    as_root = os.geteuid() == 0
    skipped = 0
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dirs, links = [], []
    for path, entry in tree:
        dest = root / path.lstrip("/") if path != "/" else root
        if entry.type == DIR:
            dest.mkdir(exist_ok=True)
            dirs.append((dest, entry))
            continue
        if entry.type == FILE:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(entry.data)
        elif entry.type == SYMLINK:
            os.symlink(entry.target, dest)
        elif entry.type == HARDLINK:
            links.append((root / entry.target.lstrip("/"), dest))
            continue
        elif entry.type == FIFO:
            os.mkfifo(dest, 0o600)
        else:
            skipped += 1
            continue
        if as_root:
            os.chown(dest, entry.uid, entry.gid, follow_symlinks=False)
        if entry.type != SYMLINK:
            os.chmod(dest, entry.mode & 0o7777)
        os.utime(dest, (entry.mtime, entry.mtime), follow_symlinks=False)
    for target, dest in links:  # once every target exists: /bin/ash sorts before /bin/busybox
        os.link(target, dest, follow_symlinks=False)
    for dest, entry in reversed(dirs):  # last, so writing files did not change them again
        if as_root:
            os.chown(dest, entry.uid, entry.gid)
        os.chmod(dest, entry.mode & 0o7777)
        os.utime(dest, (entry.mtime, entry.mtime))
    return skipped
