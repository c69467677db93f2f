"""An LXC/Incus image directory: meta.tar.xz (lxc-create -t local's --metadata), incus.tar.xz
(Incus's metadata tarball) and rootfs.tar.xz (both tools' root file system), swapped in whole.

The files come made (lxembed.containers.lxc_image); each tarball is a small tree serialised by
the same tar writer as the images, so owners are 0:0, mtimes are `epoch`, entries are sorted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict

from ..tree import RootfsTree
from .output import Artifact, _stream, replace_dir_atomic
from .tar import write_tar

PARTS = ("meta.tar.xz", "incus.tar.xz", "rootfs.tar.xz")


def _files_tree(files: Dict[str, bytes], epoch: int) -> RootfsTree:
    tree = RootfsTree()
    tree.entries["/"].mtime = epoch
    for rel, data in sorted(files.items()):
        tree.write("/" + rel, data, mtime=epoch)
    return tree


def write_lxc_image(meta: Dict[str, bytes], incus: Dict[str, bytes], rootfs: RootfsTree,
                    dest: Path, epoch: int) -> Artifact:
    """DEST/{meta,incus,rootfs}.tar.xz; the artifact's sha256 is over the three files' own."""
    trees = dict(zip(PARTS, (_files_tree(meta, epoch), _files_tree(incus, epoch), rootfs)))
    digest, size = hashlib.sha256(), 0

    def fill(tmp: Path) -> None:
        nonlocal size
        for name, tree in trees.items():
            with open(tmp / name, "wb") as fh:
                _stream(write_tar, tree, "xz", fh)
            data = (tmp / name).read_bytes()
            digest.update(hashlib.sha256(data).digest())
            size += len(data)

    replace_dir_atomic(dest, fill)
    return Artifact("lxc-image", str(dest), size, digest.hexdigest())
