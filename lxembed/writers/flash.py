"""What the raw-flash writers (jffs2, ubi) share: the board's flash geometry, the device table,
and rewriting the inodes the mkfs tools took from the staging copy.

mkfs.jffs2 and mkfs.ubifs read a directory: contents, symlinks and hard links come from a
staging copy of the tree, device nodes and FIFOs from a device table, owners are squashed (-U)
and set again by the table. The times (and a symlink's owner, which no device table can name)
come from the host's files, so after mkfs every inode node is rewritten from the tree and its
CRC fixed: nothing about the host reaches the image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ..config.settings import parse_size
from ..errors import UserError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, Entry, RootfsTree
from .directory import write_contents

_TABLE_TYPES = {DIR: "d", FILE: "f", CHAR: "c", BLOCK: "b", FIFO: "p"}


@dataclass(frozen=True)
class FlashGeometry:
    """A board's raw flash (its `[flash]` table): NOR or NAND, erase block, pages, size."""

    type: str = "nor"
    erase_block: int = 64 * 1024  # the physical erase block (UBI's PEB)
    page_size: int = 1  # the minimum I/O unit: 1 on NOR, the page on NAND
    sub_page_size: int = 0  # 0: same as page_size
    size: Optional[int] = None  # bytes of flash the root filesystem may take

    @classmethod
    def from_board(cls, board, fmt: str) -> FlashGeometry:
        table = board.settings.get("flash") if board is not None else None
        if table is None:
            name = board.name if board is not None else "this board"
            raise UserError(f"{name}: no [flash] table: the {fmt} format needs the board's "
                            "flash geometry (erase block, page size)",
                            hint="add [flash] to the board file (docs/config.md), or choose "
                                 "ext4 or squashfs")
        page = parse_size(table["page_size"]) if table.get("page_size") is not None else (
            1 if table["type"] == "nor" else 2048)
        geometry = cls(table["type"], parse_size(table["erase_block"]), page,
                       parse_size(table.get("sub_page_size") or 0),
                       parse_size(table["size"]) if table.get("size") is not None else None)
        geometry.check(f"{board.path}: [flash]")
        return geometry

    @property
    def sub_page(self) -> int:
        return self.sub_page_size or self.page_size

    def check(self, where: str) -> None:
        def power_of_two(n: int) -> bool:
            return n > 0 and n & (n - 1) == 0
        if not (power_of_two(self.erase_block) and power_of_two(self.page_size)
                and power_of_two(self.sub_page)):
            raise UserError(f"{where}: erase_block, page_size and sub_page_size must be powers "
                            "of two")
        if not self.sub_page <= self.page_size < self.erase_block:
            raise UserError(f"{where}: needs sub_page_size <= page_size < erase_block")

    @property
    def leb_size(self) -> int:
        """UBI's logical erase block: the PEB less its EC and VID headers (libubigen's rule)."""
        vid_offset = -(-64 // self.sub_page) * self.sub_page  # after the 64-byte EC header
        data_offset = -(-(vid_offset + 64) // self.page_size) * self.page_size
        return self.erase_block - data_offset


def derived_number(identity: str, epoch: int, what: str, size: int) -> bytes:
    """`size` bytes fixed per image identity and epoch (UUIDs, image sequence numbers)."""
    return hashlib.sha256(f"lxembed {what}\0{identity}\0{epoch}".encode()).digest()[:size]


def device_table(tree: RootfsTree) -> str:
    """mtd-utils' device table: the owner and mode of every entry, and the nodes to make.

    Symlinks cannot be named (neither tool has a type for them), nor paths with white space;
    their owners and modes are set with the times afterwards. Hard links share their target's
    line.
    """
    lines = []
    for path, e in tree:
        kind = _TABLE_TYPES.get(e.type)
        if path == "/" or kind is None:
            continue
        if any(c.isspace() for c in path):
            if e.type in (DIR, FILE):
                continue
            raise UserError(f"{path!r}: a device table cannot name a path with white space",
                            hint="rename it in the recipe, or use ext4 or squashfs")
        major, minor = (e.major, e.minor) if e.type in (CHAR, BLOCK) else ("-", "-")
        lines.append(f"{path} {kind} {e.mode & 0o7777:o} {e.uid} {e.gid} {major} {minor} - - -")
    return "\n".join(lines) + "\n"


def inode_entries(tree: RootfsTree) -> Callable[[str], Optional[Entry]]:
    """path -> the entry that owns its inode (a hard link's target)."""
    def lookup(path: str) -> Optional[Entry]:
        e = tree.entries.get(path)
        if e is not None and e.type == HARDLINK:
            e = tree.entries.get(e.target)
        return e
    return lookup


class InodePaths:
    """Inode number -> path, learnt from the directory entries of an image as they are read."""

    def __init__(self, root_ino: int):
        self.paths: Dict[int, str] = {root_ino: "/"}
        self.pending: List[tuple] = []  # (parent ino, ino, name) before the parent is known

    def add(self, parent: int, ino: int, name: str) -> None:
        self.pending.append((parent, ino, name))

    def resolve(self) -> Dict[int, str]:
        progress = True
        while self.pending and progress:
            progress, rest = False, []
            for parent, ino, name in self.pending:
                if parent in self.paths:
                    base = self.paths[parent]
                    self.paths.setdefault(ino, (base.rstrip("/") + "/" + name))
                    progress = True
                else:
                    rest.append((parent, ino, name))
            self.pending = rest
        return self.paths


def stage(tree: RootfsTree, root) -> None:
    """The staging copy both mkfs tools read: contents only, files 0644, directories 0755
    (modes, owners and times are set in the image afterwards, from the tree)."""
    write_contents(tree, root, file_mode=0o644, fifos=False)


def run_tool(argv: List[str], what: str) -> subprocess.CompletedProcess:
    if shutil.which(argv[0]) is None:
        raise UserError(f"{what}: {argv[0]} is not installed", hint="apt-get install mtd-utils")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-600:]
        raise UserError(f"{what}: {os.path.basename(argv[0])} failed: {detail}")
    return result


def check_ids(tree: RootfsTree, limit: int, fmt: str) -> None:
    for path, e in tree:
        if e.uid > limit or e.gid > limit:
            raise UserError(f"{fmt}: {path}: owner {e.uid}:{e.gid} does not fit the format "
                            f"(at most {limit})")

