"""Lay a host directory tree (overlays/NAME/) over the rootfs tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UserError
from ..tree import DIR, FILE, SYMLINK, Entry, RootfsTree, symlink_escapes


def add_overlay(tree: RootfsTree, root: Path, epoch: int, origin: str = "") -> int:
    """Copy files, directories and symlinks under `root` into the tree, owned by root.

    Host mtimes, owners and permission bits are ignored (a checkout has none of them stable: the
    umask decides directory modes), so the image depends only on the overlay's content:
    directories 0755, files 0755 if executable, else 0644. Symlinks that climb out of the root
    are refused.
    """
    origin = origin or f"overlay {root.name}"
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames) + sorted(filenames):
            if name == ".gitkeep":
                continue
            host = os.path.join(dirpath, name)
            dest = os.path.normpath(os.path.join("/", rel_dir, name))
            st = os.lstat(host)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(host)
                if symlink_escapes(dest, target):
                    raise UserError(f"{host}: symlink to {target} points outside the rootfs")
                entry = Entry(SYMLINK, 0o777, target=target, mtime=epoch, origin=origin)
            elif stat.S_ISDIR(st.st_mode):
                entry = Entry(DIR, 0o755, mtime=epoch, origin=origin)
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                entry = Entry(FILE, mode, data=Path(host).read_bytes(), mtime=epoch, origin=origin)
            else:
                raise UserError(f"{host}: only files, directories and symlinks can be overlaid")
            tree.add(dest, entry)
            count += 1
    return count
