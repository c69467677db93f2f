"""squashfs from the tree with the real mksquashfs, rootless.

Every entry is a pseudo-file definition (-pf) written from the tree, over an empty source
directory: owners, modes, times, device nodes, symlinks and hard links all come from the tree,
never from the host. (mksquashfs 4.5 cannot modify a directory that has pseudo children, so
modifying a written-out directory is not an option.) File contents are streamed by `cat` from a
staging copy; hard links become copies, as in the cpio writer.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..config.settings import parse_size
from ..errors import UserError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, RootfsTree

MKSQUASHFS_OPTIONS = ["-noappend", "-no-xattrs", "-quiet", "-no-progress"]
# The option each compressor takes its level with, and the level used when none is given.
_LEVELS = {"zstd": ("-Xcompression-level", 19), "gzip": ("-Xcompression-level", 9),
           "xz": (None, None), "lz4": (None, None), "lzo": ("-Xcompression-level", 8)}


@dataclass(frozen=True)
class SquashfsOptions:
    # zstd: every Debian kernel of the boards has CONFIG_SQUASHFS_ZSTD; 256 KiB blocks compress
    # a rootfs best (smaller blocks read faster at random, for a little more flash).
    compressor: str = "zstd"
    block_size: int = 256 * 1024
    level: Optional[int] = None

    @classmethod
    def from_recipe(cls, table: Optional[dict]) -> SquashfsOptions:
        table = table or {}
        opts = cls(table.get("compressor", "zstd"), parse_size(table.get("block_size", "256K")),
                   table.get("level"))
        bs = opts.block_size
        if bs < 4096 or bs > 1 << 20 or bs & (bs - 1):
            raise UserError(f"[squashfs] block_size: {bs} is not a power of two from 4K to 1M")
        if opts.level is not None and _LEVELS[opts.compressor][0] is None:
            raise UserError(f"[squashfs] level: mksquashfs's {opts.compressor} takes no level")
        return opts

    def arguments(self) -> List[str]:
        flag, default = _LEVELS[self.compressor]
        level = self.level if self.level is not None else default
        return ["-comp", self.compressor, "-b", str(self.block_size),
                *([flag, str(level)] if flag else [])]


def _name(path: str) -> str:
    # Pseudo-file names are unquoted: spaces and backslashes are escaped with a backslash.
    return path.replace("\\", "\\\\").replace(" ", "\\ ")


def pseudo_definitions(tree: RootfsTree, staging: Path) -> str:
    """One definition per entry; regular files are read from `staging/<index>`."""
    lines = []
    for index, (path, e) in enumerate(tree):
        if path == "/":
            continue  # the root is the (empty) source directory, made 0755 by the caller
        head = f"{_name(path)} {{}} {e.mtime} {e.mode & 0o7777:o} {e.uid} {e.gid}"
        if e.type == DIR:
            lines.append(head.format("D"))
        elif e.type in (FILE, HARDLINK):
            # A hard link is stored as a copy: pseudo `l` links to a *host* path.
            target = tree.get(e.target) if e.type == HARDLINK else e
            blob = staging / str(index)
            blob.write_bytes(target.data if target is not None else b"")
            lines.append(head.format("F") + f" cat {shlex.quote(str(blob))}")
        elif e.type == SYMLINK:
            lines.append(head.format("S") + f" {e.target}")
        elif e.type in (CHAR, BLOCK):
            lines.append(head.format("C" if e.type == CHAR else "B") + f" {e.major} {e.minor}")
        elif e.type == FIFO:
            lines.append(head.format("I") + " f")
    return "\n".join(lines) + "\n"


def write_squashfs(tree: RootfsTree, out, epoch: int,
                   opts: Optional[SquashfsOptions] = None) -> None:
    """Serialise `tree` as squashfs into the open file `out`."""
    opts = opts or SquashfsOptions()
    tool = shutil.which("mksquashfs")
    if tool is None:
        raise UserError("mksquashfs is not installed", hint="apt-get install squashfs-tools")
    with tempfile.TemporaryDirectory(prefix="lxembed-sqfs-") as tmp:
        empty, staging = Path(tmp, "empty"), Path(tmp, "files")
        empty.mkdir(mode=0o755)
        staging.mkdir()
        os.chmod(empty, 0o755)
        os.utime(empty, (epoch, epoch))
        pseudo, image = Path(tmp, "pseudo"), Path(tmp, "image")
        pseudo.write_text(pseudo_definitions(tree, staging))
        # The epoch goes in as -mkfs-time only: mksquashfs refuses to run when
        # SOURCE_DATE_EPOCH is also in its environment, as every reproducible build sets it.
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        result = subprocess.run(
            [tool, str(empty), str(image), *MKSQUASHFS_OPTIONS, *opts.arguments(),
             "-mkfs-time", str(epoch), "-pf", str(pseudo)], capture_output=True, text=True,
            env=env)
        if result.returncode != 0 or "Ignoring" in result.stderr:
            detail = (result.stderr or result.stdout).strip()[-500:]
            raise UserError(f"mksquashfs failed: {detail}")
        with open(image, "rb") as fh:
            shutil.copyfileobj(fh, out)
