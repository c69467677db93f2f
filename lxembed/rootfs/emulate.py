"""Run a program of the image at build time, under qemu-user, against the image's own libs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

from ..arch import Arch
from ..elf.identify import identify
from ..errors import UserError
from ..tree import RootfsTree


def qemu_user_argv(tree: RootfsTree, root: Path, program: str, arch: Arch) -> List[str]:
    """argv running `program` of `tree` (written out at `root`) under qemu-user.

    qemu's -L prefix does not follow absolute symlinks inside the prefix (mips64el's
    /lib64/ld.so.1, amd64's /lib64/ld-linux-x86-64.so.2 point to /lib/...), so the loader is
    resolved in the tree and started explicitly.
    """
    if not os.path.exists(arch.qemu_user_path):
        raise UserError(f"{arch.qemu_user_path} is missing: install qemu-user-static to build "
                        f"{arch.debian} images")
    argv = [arch.qemu_user_path, "-L", str(root)]
    if arch.qemu_user_cpu:
        argv += ["-cpu", arch.qemu_user_cpu]
    info = identify(tree.read(program), program)
    if info.interp:
        argv.append(str(root / tree.resolve(info.interp).lstrip("/")))
    return argv + [str(root / program.lstrip("/"))]
