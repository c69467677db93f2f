#!/usr/bin/env python3
"""Build-speed benchmark: lxembed's warm-cache busybox build against mmdebstrap.

Prints, side by side: median warm-cache build time of the `busybox` recipe (cpio.zst) for two
boards, mmdebstrap --variant=custom installing the same package into a tarball, the ratio, and
the image sizes. Installs mmdebstrap from Debian when it is missing (needs root).

mmdebstrap's custom variant installs with dpkg inside the chroot, so it also needs dpkg and a
shell there (the busybox example of mmdebstrap(1) is used); the boards are amd64 and i386,
which run natively here.
mmdebstrap keeps no package cache between runs: its time includes apt update and downloads,
the way it is used. Goal: lxembed under 1 s warm, at most 1/5 of mmdebstrap's time.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxembed.sources.mirror import find_mirrors  # noqa: E402

BOARDS = (("qemu-x86_64", "amd64"), ("qemu-i386", "i386"))
RUNS = 5
# mmdebstrap(1)'s own example of a busybox chroot with --variant=custom (busybox-static here).
MM_PACKAGES = "dpkg,busybox-static,libc-bin,base-files,base-passwd,debianutils"
MM_HOOKS = [
    '--setup-hook=mkdir -p "$1/bin"',
    '--setup-hook=for p in awk cat chmod chown cp diff echo env grep less ln mkdir mount rm rmdir '
    'sed sh sleep sort touch uname mktemp; do ln -s busybox "$1/bin/$p"; done',
    '--setup-hook=echo root:x:0:0:root:/root:/bin/sh > "$1/etc/passwd"',
    '--setup-hook=printf "root:x:0:\\nmail:x:8:\\nutmp:x:43:\\n" > "$1/etc/group"',
]


def timed(cmd, **kw) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    return time.monotonic() - start


def ensure_mmdebstrap() -> None:
    if shutil.which("mmdebstrap") and shutil.which("arch-test"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "mmdebstrap",
                    "arch-test"],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> int:
    ensure_mmdebstrap()
    mirror = find_mirrors("bookworm").main
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for board, arch in BOARDS:
            out = Path(tmp) / board
            lx = [sys.executable, "-m", "lxembed", "-q", "build", "-b", board, "-r", "busybox",
                  "-o", str(out), "-f", "cpio.zst"]
            timed(lx, cwd=ROOT)  # warm the cache (downloads once)
            lx_times = [timed(lx, cwd=ROOT) for _ in range(RUNS)]
            tarball = Path(tmp) / f"{board}-mm.tar"
            mm = ["mmdebstrap", "--variant=custom", "--mode=root", f"--architectures={arch}",
                  f"--include={MM_PACKAGES}", *MM_HOOKS, "bookworm", str(tarball), mirror]
            mm_times = [timed(mm) for _ in range(3)]
            lx_s, mm_s = statistics.median(lx_times), statistics.median(mm_times)
            rows.append((board, lx_s, mm_s, (out / "rootfs.cpio.zst").stat().st_size,
                         tarball.stat().st_size))
    print(f"{'board':14} {'lxembed warm':>13} {'mmdebstrap':>11} {'ratio':>7} "
          f"{'cpio.zst':>10} {'mm tar':>10}")
    for board, lx_s, mm_s, size, mm_size in rows:
        print(f"{board:14} {lx_s:12.3f}s {mm_s:10.3f}s {lx_s / mm_s:7.3f} "
              f"{size / 1e6:9.3f}M {mm_size / 1e6:9.3f}M")
    print(f"goals: lxembed < 1 s warm, ratio <= 0.2, cpio.zst < 1.0 MB (median of {RUNS} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
