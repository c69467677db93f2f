"""ext4 from the tree with the real e2fsprogs, rootless and bit-identical.

`mke2fs` makes the empty filesystem (layout, journal, lost+found); then e2fsprogs' own library
fills it straight from the tree (ext2fs.py): every inode is written once with the tree's mode,
owner and times, device nodes included, and no host file is staged or read, so nothing about
the host (owner, ctime, nanoseconds, xattrs) reaches the image. That costs about what
`mke2fs -d` costs on an already written directory; the former staging copy plus eleven
debugfs commands per inode (each a path lookup) cost ten to thirty times more. bookworm's
e2fsprogs 1.47.0 is reproducible only with E2FSPROGS_FAKE_TIME set, a fixed UUID (-U) and a
fixed directory hash seed; both are derived from `identity` (board, recipe, image name) and the
epoch. mke2fs reads its own config file, never the host's /etc/mke2fs.conf, so another
machine's defaults cannot change the bytes.
`e2fsck -fn` checks every image before it is handed out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ..errors import UserError
from ..tree import DIR, FILE, SYMLINK, RootfsTree
from .ext2fs import Ext2Error, populate

MIB = 1 << 20
INODE_SIZE = 256  # 128-byte inodes stop at 2038
# Pinned here instead of read from /etc/mke2fs.conf: bookworm's ext4 defaults.
MKE2FS_CONF = """\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tinode_size = 256
\tinode_ratio = 16384
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t}
\tfloppy = {
\t}
"""


@dataclass(frozen=True)
class Ext4Options:
    size: Optional[int] = None  # fixed image size in bytes; None: content plus headroom
    headroom: str = "20%"  # free space on top of the content: a percentage or a byte count
    block_size: int = 4096
    journal: bool = True

    @classmethod
    def from_recipe(cls, table: Optional[dict]) -> Ext4Options:
        table = table or {}
        opts = cls(size=table.get("size"), headroom=str(table.get("headroom", "20%")),
                   block_size=table.get("block_size", 4096), journal=table.get("journal", True))
        if opts.block_size not in (1024, 2048, 4096):
            raise UserError(f"[ext4] block_size: {opts.block_size} is not 1024, 2048 or 4096")
        return opts


def fs_uuids(identity: str, epoch: int) -> Tuple[str, str]:
    """The filesystem UUID and the directory hash seed: fixed per board, recipe and epoch."""
    def derive(what: str) -> str:
        digest = hashlib.sha256(f"lxembed {what}\0{identity}\0{epoch}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))
    return derive("ext4-uuid"), derive("ext4-hash-seed")


def _headroom_bytes(headroom: str, content: int) -> int:
    text = headroom.strip()
    if text.endswith("%"):
        try:
            return content * int(text[:-1]) // 100
        except ValueError:
            pass
    else:
        from ..config.settings import parse_size
        try:
            return parse_size(text)
        except ValueError:
            pass
    raise UserError(f"ext4: headroom {headroom!r} is neither a percentage (\"20%\") nor a size "
                    "(\"8MiB\")")


def _journal_blocks(blocks: int) -> int:
    # e2fsprogs' ext2fs_default_journal_size(), the part a root filesystem reaches.
    if blocks < 2048:
        return 0
    if blocks < 32768:
        return 1024
    if blocks < 256 * 1024:
        return 4096
    return 8192 if blocks < 512 * 1024 else 16384


def content_estimate(tree: RootfsTree, block_size: int) -> Tuple[int, int]:
    """(bytes the tree takes in blocks and inode tables, inodes it needs)."""
    children: dict = {}
    blocks = 0
    for path, e in tree:
        if path != "/":
            parent, _, name = path.rpartition("/")
            children[parent or "/"] = children.get(parent or "/", 0) + (len(name) + 11) // 4 * 4
        if e.type == FILE:
            blocks += -(-len(e.data) // block_size)
            blocks += len(e.data) // (128 * MIB) // 4  # an extent block past four extents
        elif e.type == SYMLINK and len(e.target) >= 60:
            blocks += 1
    for path, e in tree:
        if e.type == DIR:  # dirents plus the htree index block of a big directory
            used = children.get(path, 0) + 24
            blocks += -(-used // (block_size - 16)) + (1 if used > block_size else 0)
    inodes = len(tree) + 16  # 11 reserved, lost+found, slack
    return blocks * block_size + inodes * INODE_SIZE, inodes


def image_geometry(tree: RootfsTree, opts: Ext4Options) -> Tuple[int, int]:
    """(image size in bytes, inode count) for `tree` with `opts`."""
    content, inodes = content_estimate(tree, opts.block_size)
    free = _headroom_bytes(opts.headroom, content)
    inodes += free // 16384 + inodes // 4
    if opts.size is not None:
        return opts.size, inodes
    bs = opts.block_size
    # Group metadata (superblock copies, descriptors, bitmaps, lost+found): generous and fixed.
    base = content + free + 64 * bs + content // 50
    blocks = -(-base // bs)
    if opts.journal:
        blocks += _journal_blocks(blocks + 1024)
    size = blocks * bs
    return -(-size // MIB) * MIB, inodes


def _tools() -> dict:
    tools = {name: shutil.which(name) for name in ("mke2fs", "e2fsck")}
    missing = [n for n, p in tools.items() if p is None]
    if missing:
        raise UserError(f"ext4: {', '.join(missing)} not installed",
                        hint="apt-get install e2fsprogs")
    return tools


def _scratch_dir(size: int) -> Optional[str]:
    """RAM (/dev/shm) for the scratch image when it fits twice over: it is read once, copied
    out and deleted, and on a disk its writes cost a quarter of the whole write; else the
    default temporary directory. A tmpfs holds only the blocks written, never the free space.
    """
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    if st.f_bavail * st.f_frsize >= 2 * size and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


def _raise_if_full(detail: str, size: int) -> None:
    full = ("Could not allocate", "No free space", "No space left", "Not enough space")
    if any(text in detail for text in full):
        raise UserError(f"ext4: the tree does not fit in {size} bytes ({detail[-200:]})",
                        hint="raise [ext4] size, or leave it unset to size the image from its "
                             "content")


def write_ext4(tree: RootfsTree, out, epoch: int, identity: str,
               opts: Optional[Ext4Options] = None) -> None:
    """Serialise `tree` as an ext4 image into the open file `out`."""
    opts = opts or Ext4Options()
    tools = _tools()
    size, inodes = image_geometry(tree, opts)
    fs_uuid, hash_seed = fs_uuids(identity, epoch)
    fake_time = max(epoch, 1)
    with tempfile.TemporaryDirectory(prefix="lxembed-ext4-", dir=_scratch_dir(size)) as tmp:
        conf, image = Path(tmp, "mke2fs.conf"), Path(tmp, "image")
        conf.write_text(MKE2FS_CONF)
        # Fake time: mke2fs stamps the superblock, root and lost+found with it.
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C",
               "MKE2FS_CONFIG": str(conf), "E2FSPROGS_FAKE_TIME": str(fake_time)}
        features = "" if opts.journal else "^has_journal"
        argv = [tools["mke2fs"], "-q", "-F", "-t", "ext4", "-b", str(opts.block_size),
                "-I", str(INODE_SIZE), "-N", str(inodes), "-m", "0", "-U", fs_uuid,
                "-E", f"hash_seed={hash_seed},root_owner=0:0,nodiscard",
                *(["-O", features] if features else []), str(image), f"{size // 1024}k"]
        result = subprocess.run(argv, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            # One line: mke2fs's message, without its notes and the scratch path.
            detail = "; ".join(
                line.strip().replace(str(image), "the image")
                for line in (result.stderr + result.stdout).splitlines()
                if line.strip() and not line.startswith(("Warning: the fs_type", "Creating ")))
            _raise_if_full(detail, size)
            raise UserError(f"ext4: mke2fs failed: {detail[-600:]}")
        try:
            populate(str(image), tree, fake_time)
        except Ext2Error as err:
            _raise_if_full(str(err), size)
            raise UserError(f"ext4: {err}") from None
        check = subprocess.run([tools["e2fsck"], "-fn", str(image)], capture_output=True,
                               text=True, env=env)
        if check.returncode != 0:
            raise UserError(f"ext4: e2fsck -fn found errors in the written image: "
                            f"{check.stdout.strip()[-600:]}")
        with open(image, "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)
