"""jffs2 for raw NOR/NAND flash, with the real mkfs.jffs2, rootless and bit-identical.

mkfs.jffs2 reads a staging copy (owners squashed with -U) and a device table (nodes, owners,
modes); then every inode node's mode, owner and times, and every directory entry's time, are
set from the tree and the node CRCs fixed (see flash.py for why). The erase block size and
NOR/NAND come from the board's [flash] table, the byte order from the architecture.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from pathlib import Path

from ..errors import UserError
from ..tree import RootfsTree
from .flash import FlashGeometry, InodePaths, check_ids, device_table, inode_entries, run_tool
from .flash import stage as stage_tree

MAGIC = 0x1985
DIRENT, INODE = 0xE001, 0xE002


def _crc(data: bytes) -> int:
    # mtd-utils' crc32: seed 0, no final inversion (zlib's inverts on both ends).
    return zlib.crc32(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


def _nodes(image: bytearray, order: str):
    """(offset, node type) of every node; nodes are 4-byte aligned, padding is skipped."""
    off = 0
    while off + 12 <= len(image):
        magic, kind, length = struct.unpack_from(order + "HHI", image, off)
        if magic != MAGIC or length < 12:
            off += 4
            continue
        yield off, kind
        off += (length + 3) & ~3


def set_inodes_from_tree(image: bytearray, tree: RootfsTree, big_endian: bool) -> None:
    """Rewrite mode, owner and times of every inode node, and every dirent's time."""
    order = ">" if big_endian else "<"
    paths = InodePaths(root_ino=1)
    nodes = list(_nodes(image, order))
    for off, kind in nodes:
        if kind == DIRENT:
            pino, _, ino, _, nsize = struct.unpack_from(order + "IIIIB", image, off + 12)
            paths.add(pino, ino, image[off + 40:off + 40 + nsize].decode("utf-8", "replace"))
    by_ino = paths.resolve()
    entry_of = inode_entries(tree)
    for off, kind in nodes:
        if kind == INODE:
            ino = struct.unpack_from(order + "I", image, off + 12)[0]
            e = entry_of(by_ino.get(ino, ""))
            if e is None:
                raise UserError(f"jffs2: inode {ino} ({by_ino.get(ino, '?')}) is not in the tree")
            mode = struct.unpack_from(order + "I", image, off + 20)[0]
            struct.pack_into(order + "IHH", image, off + 20, (mode & ~0o7777) | (e.mode & 0o7777),
                             e.uid, e.gid)
            struct.pack_into(order + "III", image, off + 32, e.mtime, e.mtime, e.mtime)
            struct.pack_into(order + "I", image, off + 64, _crc(bytes(image[off:off + 60])))
        elif kind == DIRENT:
            pino = struct.unpack_from(order + "I", image, off + 12)[0]
            parent = entry_of(by_ino.get(pino, ""))
            # The newest dirent's time becomes its directory's mtime when the kernel reads it.
            struct.pack_into(order + "I", image, off + 24, parent.mtime if parent else 0)
            struct.pack_into(order + "I", image, off + 32, _crc(bytes(image[off:off + 32])))


def write_jffs2(tree: RootfsTree, out, geometry: FlashGeometry, big_endian: bool) -> None:
    """Serialise `tree` as a jffs2 image into the open file `out`."""
    check_ids(tree, 0xFFFF, "jffs2")  # 16-bit owners in jffs2 inodes
    with tempfile.TemporaryDirectory(prefix="lxembed-jffs2-") as tmp:
        root, table, image = Path(tmp, "root"), Path(tmp, "devtable"), Path(tmp, "image")
        root.mkdir()
        stage_tree(tree, root)
        table.write_text(device_table(tree))
        # -p: pad to a whole erase block, as a flasher writes it; NAND keeps its clean
        # markers out of band (-n).
        argv = [shutil.which("mkfs.jffs2") or "mkfs.jffs2", "-r", str(root), "-o", str(image),
                "-e", str(geometry.erase_block), "-b" if big_endian else "-l", "-U",
                "-D", str(table), "-p", *(["-n"] if geometry.type == "nand" else [])]
        run_tool(argv, "jffs2")
        data = bytearray(image.read_bytes())
        set_inodes_from_tree(data, tree, big_endian)
        if geometry.size is not None and len(data) > geometry.size:
            raise UserError(f"jffs2: the image ({len(data)} bytes) is larger than the board's "
                            f"flash ([flash] size = {geometry.size})")
        out.write(bytes(data))
