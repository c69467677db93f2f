"""POSIX tar from the tree (tarfile, GNU format: no pax timestamps), rootless, reproducible."""

from __future__ import annotations

import io
import tarfile
from typing import BinaryIO

from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, RootfsTree

_TYPES = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE,
          HARDLINK: tarfile.LNKTYPE, CHAR: tarfile.CHRTYPE, BLOCK: tarfile.BLKTYPE,
          FIFO: tarfile.FIFOTYPE}


def write_tar(tree: RootfsTree, out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for path, entry in tree:
            info = tarfile.TarInfo("./" if path == "/" else "." + path)
            info.type = _TYPES[entry.type]
            info.mode = entry.mode & 0o7777
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            info.mtime = entry.mtime
            if entry.type == SYMLINK:
                info.linkname = entry.target
            elif entry.type == HARDLINK:
                info.linkname = "." + entry.target
            elif entry.type in (CHAR, BLOCK):
                info.devmajor, info.devminor = entry.major, entry.minor
            if entry.type == FILE:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
