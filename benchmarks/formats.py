#!/usr/bin/env python3
"""Write-time benchmark: every image format of busybox-python on qemu-arm64, against its floor.

For each format, prints lxembed's time to write the tree (median of RUNS) next to the same
tool run by hand on an already-written directory (the floor: what the format costs anyway),
and the image size. lxembed's extra work is the staging copy, the debugfs/node rewrite that
takes owners, modes and times from the tree, and the checks (e2fsck). The tree is built once;
its build time is not counted. Run as root (the hand-run floor tools read a root-owned copy).
lxembed remembers level-19 zstd output by content (an unchanged image is not compressed again),
so after the first run cpio.zst and tar.zst cost only the serialisation.
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

from lxembed.config import load_plan  # noqa: E402
from lxembed.rootfs.build import build_tree  # noqa: E402
from lxembed.writers.directory import write_dir  # noqa: E402
from lxembed.writers.ext4 import Ext4Options, image_geometry  # noqa: E402
from lxembed.writers.flash import FlashGeometry  # noqa: E402
from lxembed.writers.output import write_formats  # noqa: E402

RUNS = 3
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


def main() -> int:
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
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
