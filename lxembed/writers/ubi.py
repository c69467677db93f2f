"""UBI (one UBIFS volume) for raw NAND/NOR flash, with the real mkfs.ubifs and ubinize.

mkfs.ubifs reads a staging copy (owners squashed with -U) and a device table; it also writes a
random UUID into the superblock. So after it runs, every inode node is rewritten from the tree
(mode, owner, times; see flash.py) and the superblock gets a UUID derived from the board,
recipe and epoch, each node's CRC fixed: nothing else in UBIFS refers to those bytes (the
index points at nodes by position, not by hash, in an image without authentication).
ubinize then wraps the volume with a fixed image sequence number. The PEB, minimum I/O unit
and sub-page come from the board's [flash] table; the LEB follows from them.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import uuid
import zlib
from pathlib import Path

from ..errors import UserError
from ..tree import RootfsTree
from .flash import (
    FlashGeometry,
    InodePaths,
    check_ids,
    derived_number,
    device_table,
    inode_entries,
    run_tool,
)
from .flash import stage as stage_tree

MAGIC = 0x06101831
INO_NODE, DENT_NODE, SB_NODE = 0, 2, 6
INO_NODE_SIZE = 160  # struct ubifs_ino_node without inline data
ROOT_INO = 1
SB_UUID = 108  # offset of the uuid in struct ubifs_sb_node
UBINIZE_CONFIG = """\
[rootfs]
mode=ubi
image={image}
vol_id=0
vol_type=dynamic
vol_name=rootfs
vol_flags=autoresize
"""


def _crc(node: bytes) -> int:
    # UBIFS: crc32 seeded with 0xFFFFFFFF over the node after its magic and crc, not inverted.
    return zlib.crc32(node[8:]) ^ 0xFFFFFFFF


def _nodes(image: bytearray):
    """(offset, type, length) of every node: nodes are 8-byte aligned, LEBs padded."""
    off = 0
    while off + 24 <= len(image):
        magic, _, _, length, kind = struct.unpack_from("<IIQIB", image, off)
        if magic != MAGIC or length < 24 or off + length > len(image):
            off += 8
            continue
        yield off, kind, length
        off += (length + 7) & ~7


def _fix_crc(image: bytearray, off: int, length: int) -> None:
    struct.pack_into("<I", image, off + 4, _crc(bytes(image[off:off + length])))


def set_inodes_from_tree(image: bytearray, tree: RootfsTree, fs_uuid: bytes) -> None:
    """Inode nodes from the tree, the superblock's UUID fixed; CRCs recomputed."""
    paths = InodePaths(ROOT_INO)
    nodes = list(_nodes(image))
    for off, kind, _length in nodes:
        if kind == DENT_NODE:
            parent = struct.unpack_from("<I", image, off + 24)[0]
            ino = struct.unpack_from("<Q", image, off + 40)[0]
            nlen = struct.unpack_from("<H", image, off + 50)[0]
            paths.add(parent, ino, image[off + 56:off + 56 + nlen].decode("utf-8", "replace"))
    by_ino = paths.resolve()
    entry_of = inode_entries(tree)
    for off, kind, length in nodes:
        if kind == INO_NODE and length >= INO_NODE_SIZE:
            ino = struct.unpack_from("<I", image, off + 24)[0]
            e = entry_of(by_ino.get(ino, ""))
            if e is None:
                raise UserError(f"ubi: inode {ino} ({by_ino.get(ino, '?')}) is not in the tree")
            struct.pack_into("<QQQIII", image, off + 56, e.mtime, e.mtime, e.mtime, 0, 0, 0)
            mode = struct.unpack_from("<I", image, off + 104)[0]
            struct.pack_into("<II", image, off + 96, e.uid, e.gid)
            struct.pack_into("<I", image, off + 104, (mode & ~0o7777) | (e.mode & 0o7777))
            _fix_crc(image, off, length)
        elif kind == SB_NODE:
            image[off + SB_UUID:off + SB_UUID + 16] = fs_uuid
            _fix_crc(image, off, length)


def _max_leb_count(tree: RootfsTree, geometry: FlashGeometry) -> int:
    if geometry.size is not None:
        return geometry.size // geometry.erase_block
    # No flash size: room for the content twice over plus UBIFS's own LEBs.
    return tree.total_bytes() * 2 // geometry.leb_size + 64


def write_ubi(tree: RootfsTree, out, geometry: FlashGeometry, identity: str, epoch: int,
              compressor: str = "lzo") -> None:
    """Serialise `tree` as a UBI image (one UBIFS volume, "rootfs") into the open file `out`."""
    check_ids(tree, 0xFFFFFFFF, "ubi")
    fs_uuid = uuid.UUID(bytes=derived_number(identity, epoch, "ubifs-uuid", 16), version=4).bytes
    image_seq = int.from_bytes(derived_number(identity, epoch, "ubi-image-seq", 4), "little")
    with tempfile.TemporaryDirectory(prefix="lxembed-ubi-") as tmp:
        root, table = Path(tmp, "root"), Path(tmp, "devtable")
        fs, config, ubi = Path(tmp, "rootfs.ubifs"), Path(tmp, "ubinize.cfg"), Path(tmp, "ubi")
        root.mkdir()
        stage_tree(tree, root)
        table.write_text(device_table(tree))
        run_tool([shutil.which("mkfs.ubifs") or "mkfs.ubifs", "-r", str(root),
                  "-m", str(geometry.page_size), "-e", str(geometry.leb_size),
                  "-c", str(_max_leb_count(tree, geometry)), "-x", compressor, "-U",
                  "-D", str(table), "-o", str(fs)], "ubi")
        data = bytearray(fs.read_bytes())
        set_inodes_from_tree(data, tree, fs_uuid)
        fs.write_bytes(data)
        config.write_text(UBINIZE_CONFIG.format(image=fs))
        run_tool([shutil.which("ubinize") or "ubinize", "-o", str(ubi),
                  "-p", str(geometry.erase_block), "-m", str(geometry.page_size),
                  "-s", str(geometry.sub_page), "-Q", str(image_seq), str(config)], "ubi")
        if geometry.size is not None and ubi.stat().st_size > geometry.size:
            raise UserError(f"ubi: the image ({ubi.stat().st_size} bytes) is larger than the "
                            f"board's flash ([flash] size = {geometry.size})")
        with open(ubi, "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)
