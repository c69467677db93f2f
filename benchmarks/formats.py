#!/usr/bin/env python3
"""Write-time benchmark: every image format of busybox-python on qemu-arm64, against its floor.

For each format, prints lxembed's time to write the tree (median of RUNS) next to the same
tool run by hand on an already-written directory (the floor: what the format costs anyway),
and the image size. lxembed's extra work is the staging copy, the debugfs/node rewrite that
takes owners, modes and times from the tree, and the checks (e2fsck). The tree is built once;
its build time is not counted. Run as root (the hand-run floor tools read a root-owned copy).
lxembed remembers level-19 zstd output by content (an unchanged image is not compressed again),
so after the first run cpio.zst and tar.zst cost only the serialisation.

Then ext4 alone, for busybox and for a 20,000-file tree (made here, deterministically: files of
a package-like size mix in 400 directories, symlinks, hard links, owners other than root):
lxembed's whole ext4 write (mke2fs, filling the image from the tree, e2fsck -fn) against
`mke2fs -d` on the same tree written as a directory, the two alternated run by run, and the
ratio (goal: at most 1.5), in wall time and in CPU time (steadier on a shared machine).
`--ext4` runs only that part.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxembed.config import load_plan  # noqa: E402
from lxembed.rootfs.build import build_tree  # noqa: E402
from lxembed.tree import CHAR, HARDLINK, Entry, RootfsTree  # noqa: E402
from lxembed.writers.directory import write_dir  # noqa: E402
from lxembed.writers.ext4 import Ext4Options, image_geometry, write_ext4  # noqa: E402
from lxembed.writers.flash import FlashGeometry  # noqa: E402
from lxembed.writers.output import write_formats  # noqa: E402

RUNS = 3
EXT4_RUNS = 5
EPOCH = 1704067200
NOR = FlashGeometry("nor", 256 * 1024)


def floor_commands(src: Path, out: Path, tree) -> dict:
    """The bare tool on a written directory, as one would run it by hand."""
    size, inodes = image_geometry(tree, Ext4Options())
    ubi_cfg = out / "ubinize.cfg"
    ubi_cfg.write_text(f"[rootfs]\nmode=ubi\nimage={out}/fs.ubifs\nvol_id=0\nvol_type=dynamic\n"
                       "vol_name=rootfs\nvol_flags=autoresize\n")
    return {
        "cpio.zst": f"cd {src} && find . | LC_ALL=C sort | cpio -o -H newc --quiet | "
                    f"zstd -19 -q -f -o {out}/r.cpio.zst",
        "tar.zst": f"tar -C {src} --sort=name -c . | zstd -19 -q -f -o {out}/r.tar.zst",
        "squashfs": f"mksquashfs {src} {out}/r.sqfs -noappend -comp zstd -Xcompression-level 19 "
                    "-b 256K -no-xattrs -quiet -no-progress",
        "ext4": f"rm -f {out}/r.ext4; mke2fs -q -F -t ext4 -N {inodes} -d {src} {out}/r.ext4 "
                f"{size // 1024}k",
        "jffs2": f"mkfs.jffs2 -r {src} -o {out}/r.jffs2 -e {NOR.erase_block} -l -p",
        "ubi": f"mkfs.ubifs -r {src} -m 1 -e {NOR.leb_size} -c 400 -x lzo -o {out}/fs.ubifs && "
               f"ubinize -o {out}/r.ubi -p {NOR.erase_block} -m 1 {ubi_cfg}",
    }


def median_seconds(fn) -> float:
    times = []
    for _ in range(RUNS):
        start = time.monotonic()
        fn()
        times.append(time.monotonic() - start)
    return statistics.median(times)


def many_files_tree(count: int = 20000) -> RootfsTree:
    """`count` files in 400 directories, sizes like a distribution's /usr, a few symlinks,
    hard links and non-root owners; the same bytes every run."""
    rnd = random.Random(21)
    sizes = (0, 90, 400, 1500, 3000, 6000, 12000, 40000, 150000)
    weights = (2, 10, 20, 25, 18, 12, 8, 4, 1)
    tree = RootfsTree()
    for i in range(count):
        path = f"/usr/share/pkg{i // 100:03d}/{'lib' if i % 3 else 'doc'}/file{i:05d}.dat"
        size = rnd.choices(sizes, weights)[0]
        tree.write(path, rnd.randbytes(size), mode=0o755 if i % 7 == 0 else 0o644,
                   uid=1000 if i % 50 == 0 else 0, gid=100 if i % 50 == 0 else 0,
                   mtime=EPOCH - rnd.randrange(10 ** 7))
        if i % 40 == 0:
            tree.symlink(f"/usr/bin/tool{i:05d}", path)
        if i % 400 == 0:
            tree.add(f"/usr/lib/hard{i:05d}", Entry(HARDLINK, 0o644, target=path))
    tree.add("/dev/console", Entry(CHAR, 0o600, major=5, minor=1))
    tree.clamp_mtimes(EPOCH)
    return tree


def _cpu_seconds() -> float:
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn) -> tuple:
    wall, cpu = time.monotonic(), _cpu_seconds()
    fn()
    return time.monotonic() - wall, _cpu_seconds() - cpu


def ext4_against_mke2fs(name: str, tree: RootfsTree, tmp: Path) -> None:
    """lxembed's ext4 write and `mke2fs -d` on the written directory, alternated; wall and CPU
    (user + system, children included: steadier than wall on a shared machine)."""
    src, hand, ours = Path(tmp, "src"), Path(tmp, "hand.ext4"), Path(tmp, "lxembed.ext4")
    write_dir(tree, src)
    size, inodes = image_geometry(tree, Ext4Options())
    command = [shutil.which("mke2fs") or "mke2fs", "-q", "-F", "-t", "ext4", "-N", str(inodes),
               "-d", str(src), str(hand), f"{size // 1024}k"]

    def write_ours():
        with open(ours, "wb") as fh:
            write_ext4(tree, fh, EPOCH, "bench")

    def by_hand():
        hand.unlink(missing_ok=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, LC_ALL="C"))
    mine, floor = [], []
    for _ in range(EXT4_RUNS):
        mine.append(_timed(write_ours))
        floor.append(_timed(by_hand))
    (m, mc), (h, hc) = ([statistics.median(x[i] for x in runs) for i in (0, 1)]
                        for runs in (mine, floor))
    print(f"{name:22} {len(tree):>7} {m:8.2f}s {h:8.2f}s {m / h:5.2f}x  {mc:6.2f}s {hc:6.2f}s "
          f"{mc / hc:5.2f}x {ours.stat().st_size:>11}")
    shutil.rmtree(src)
    hand.unlink()


def ext4_section() -> None:
    print(f"\next4: lxembed (mke2fs, filled from the tree, e2fsck -fn) against mke2fs -d on the "
          f"written directory;\nalternated, median of {EXT4_RUNS} runs each; goal: ratio <= 1.5\n")
    print(f"{'':22} {'':7} {'wall':-^26}  {'cpu':-^23}")
    print(f"{'tree':22} {'entries':>7} {'lxembed':>9} {'mke2fs -d':>9} {'ratio':>6}  "
          f"{'lxembed':>7} {'mke2fs':>7} {'ratio':>6} {'bytes':>11}")
    busybox = build_tree(load_plan("qemu-arm64", "busybox"), None)
    busybox.clamp_mtimes(EPOCH)
    with tempfile.TemporaryDirectory(prefix="lxembed-bench-ext4-") as tmp:
        ext4_against_mke2fs("busybox (qemu-arm64)", busybox, Path(tmp))
        ext4_against_mke2fs("20,000 files", many_files_tree(), Path(tmp))
    sys.stdout.flush()


def main() -> int:
    if sys.argv[1:] == ["--ext4"]:
        ext4_section()
        return 0
    plan = load_plan("qemu-arm64", "busybox-python")
    # jffs2/ubi need the board's [flash]; qemu-arm64 has one (the virt machine's NOR pflash).
    tree = build_tree(plan, None)
    tree.clamp_mtimes(plan.epoch)
    print(f"busybox-python on qemu-arm64: {len(tree)} entries, "
          f"{tree.total_bytes() / 1e6:.2f} MB of files; median of {RUNS} runs\n")
    print(f"{'format':10} {'lxembed':>9} {'by hand':>9} {'ratio':>6} {'bytes':>11}")
    with tempfile.TemporaryDirectory(prefix="lxembed-bench-") as tmp:
        src, hand = Path(tmp, "src"), Path(tmp, "hand")
        write_dir(tree, src)
        hand.mkdir()
        floors = floor_commands(src, hand, tree)
        for fmt, command in floors.items():
            out = Path(tmp, fmt)

            def ours(out=out, fmt=fmt):
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                return write_formats(tree, out, [fmt], plan)

            def by_hand_run(command=command):
                subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=dict(os.environ, LC_ALL="C"))
            mine = median_seconds(ours)
            size = next(a.bytes for a in ours() if a.format == fmt)
            by_hand = median_seconds(by_hand_run)
            print(f"{fmt:10} {mine:8.2f}s {by_hand:8.2f}s {mine / by_hand:5.1f}x {size:>11}")
    ext4_section()
    return 0


if __name__ == "__main__":
    sys.exit(main())
