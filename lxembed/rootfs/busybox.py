"""Busybox applet links, from the target busybox's own applet list."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import List

from ..arch import Arch
from ..errors import UserError
from ..paths import cache_dir
from ..tree import FILE, RootfsTree
from ..writers.directory import write_dir
from .emulate import qemu_user_argv

BUSYBOX = "/bin/busybox"


def applet_list(tree: RootfsTree, arch: Arch) -> List[str]:
    """`busybox --list-full` of the image's busybox, run under qemu-user inside the tree.

    qemu-user with -L runs a dynamic busybox against the image's own loader and libc, and
    works the same for the host's architecture.
    """
    binary = tree.read(BUSYBOX)
    key = hashlib.sha256(binary).hexdigest()
    memo = cache_dir() / "applets" / f"{key}.txt"
    if memo.exists():
        return memo.read_text().split()
    with tempfile.TemporaryDirectory(prefix="lxembed-bb-") as tmp:
        write_dir(tree, Path(tmp))
        cmd = qemu_user_argv(tree, Path(tmp), BUSYBOX, arch) + ["--list-full"]
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise UserError(f"the {arch.debian} busybox did not list its applets: "
                        f"{result.stderr.strip()[:200]}")
    applets = sorted(set(result.stdout.split()))
    memo.parent.mkdir(exist_ok=True)
    tmp = memo.with_suffix(".tmp")
    tmp.write_text("\n".join(applets) + "\n")
    os.replace(tmp, memo)
    return applets


def add_applet_links(tree: RootfsTree, arch: Arch, epoch: int) -> int:
    """Link every applet to /bin/busybox, keeping real binaries a package already put there."""
    entry = tree.get(BUSYBOX)
    if entry is None or entry.type != FILE:
        raise UserError(f"{BUSYBOX} is not in the image: add busybox-static to packages")
    # Never setuid: a setuid multi-call binary makes every applet setuid (LXC's busybox
    # template's wart).
    entry.mode &= 0o755
    count = 0
    for applet in applet_list(tree, arch):
        path = "/" + applet.lstrip("/")
        if path == BUSYBOX or tree.get(path) is not None:
            continue
        tree.symlink(path, BUSYBOX, mtime=epoch, origin="busybox applet")
        count += 1
    return count
