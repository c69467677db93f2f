#!/usr/bin/env python3
"""Boot to ready through U-Boot against a direct -kernel boot of the same image, in one run.

    python3 benchmarks/firmware.py                       # qemu-arm64, busybox, 3 boots each
    python3 benchmarks/firmware.py -b qemu-armhf -n 5 --json

The FIT is the board's `fit` build (signed when the recipe names a key). The direct boots give
qemu the kernel and initramfs dumpimage extracts from that FIT, with the same kernel command
line, so the two differ only in the firmware: U-Boot's start, reading boot.scr and the FIT from
the virtio disk, checking the hashes (and signature), copying the kernel to its load address.
Boots alternate (direct, U-Boot, direct...) so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxembed import log  # noqa: E402
from lxembed.config import load_plan  # noqa: E402
from lxembed.errors import UserError  # noqa: E402
from lxembed.pipeline import ensure_image, image_dir  # noqa: E402
from lxembed.runners.accel import choose_accel  # noqa: E402
from lxembed.runners.qemu_system import GuestRun, QemuSetup, check_guest  # noqa: E402
from lxembed.runners.uboot import key_dtb_for, uboot_run  # noqa: E402
from lxembed.sources.kernel import fetch_kernel  # noqa: E402

GOAL = 1.0  # seconds U-Boot may add under TCG on qemu-arm64 (the goal)


def extract(fit: Path, index: int, dest: Path) -> Path:
    subprocess.run(["dumpimage", "-T", "flat_dt", "-p", str(index), "-o", str(dest), str(fit)],
                   check=True, capture_output=True)
    return dest


def bench(board: str, recipe: str, repeat: int) -> dict:
    plan = load_plan(board, recipe)
    setup = QemuSetup.for_board(plan.board)
    kernel = fetch_kernel(plan.board)
    fit = ensure_image(plan, image_dir(plan, None, "fit"), "fit", None, kernel)
    accel = choose_accel(plan.arch)
    times = {"direct": [], "uboot": []}
    uptimes = {"direct": [], "uboot": []}
    # Wall time minus the guest's uptime: what passed before the kernel's clock started (qemu's
    # start, the firmware). Less noisy than the wall times on a loaded machine, where the
    # kernel's own boot varies by more than U-Boot costs.
    before = {"direct": [], "uboot": []}
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The FIT's own images: kernel (0) and ramdisk (last; a board dtb sits between).
        count = subprocess.run(["dumpimage", "-l", str(fit)], capture_output=True, text=True,
                               check=True).stdout.count(" Image ")
        direct_kernel = dataclasses.replace(kernel, image=extract(fit, 0, work / "kernel"),
                                            vmlinux=None)
        ramdisk = extract(fit, count - 1, work / "ramdisk")
        with uboot_run(plan.board, setup, accel, fit, key_dtb_for(fit)) as argv:
            for i in range(repeat):
                for mode in ("direct", "uboot"):
                    run = GuestRun(argv=argv if mode == "uboot" else None)
                    report = check_guest(plan.board, recipe, setup, direct_kernel, ramdisk,
                                         accel, [], work / f"{mode}-{i}.log", run)
                    if report.error:
                        errors.append(f"{mode}: {report.error}")
                        continue
                    times[mode].append(report.boot_seconds)
                    if report.guest_uptime is not None:
                        uptimes[mode].append(report.guest_uptime)
                        before[mode].append(report.boot_seconds - report.guest_uptime)

    def median(xs):
        return round(statistics.median(xs), 3) if xs else None
    direct, uboot = median(times["direct"]), median(times["uboot"])
    added = round(uboot - direct, 3) if direct is not None and uboot is not None else None
    return {
        "board": board, "recipe": recipe, "accel": accel.name, "kernel": kernel.pin(),
        "fit_bytes": fit.stat().st_size, "signed": key_dtb_for(fit) is not None,
        "direct_median": direct, "uboot_median": uboot, "uboot_added": added,
        "direct_uptime": median(uptimes["direct"]), "uboot_uptime": median(uptimes["uboot"]),
        "direct_before_kernel": median(before["direct"]),
        "uboot_before_kernel": median(before["uboot"]),
        "direct": times["direct"], "uboot": times["uboot"], "errors": errors,
        "goal": GOAL, "meets_goal": added is not None and added < GOAL,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-b", "--board", default="qemu-arm64")
    parser.add_argument("-r", "--recipe", default="busybox")
    parser.add_argument("-n", "--repeat", type=int, default=3, help="boots of each kind")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.set_quiet(True)
    try:
        result = bench(args.board, args.recipe, args.repeat)
    except UserError as exc:
        print(f"firmware.py: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['board']}/{result['recipe']} ({result['accel']}), FIT "
          f"{result['fit_bytes'] / 1e6:.1f} MB{' signed' if result['signed'] else ''}, "
          f"{len(result['direct'])}+{len(result['uboot'])} boots")
    print(f"  direct -kernel boot to ready: {result['direct_median']} s "
          f"(guest uptime {result['direct_uptime']} s)")
    print(f"  U-Boot, FIT from disk:        {result['uboot_median']} s "
          f"(guest uptime {result['uboot_uptime']} s)")
    if result["direct_before_kernel"] is not None and result["uboot_before_kernel"] is not None:
        print(f"  before the kernel's clock:    direct {result['direct_before_kernel']} s, "
              f"U-Boot {result['uboot_before_kernel']} s (+"
              f"{result['uboot_before_kernel'] - result['direct_before_kernel']:.3f} s)")
    verdict = "meets" if result["meets_goal"] else "misses"
    print(f"  U-Boot adds {result['uboot_added']} s: {verdict} the {GOAL:.0f} s goal")
    for err in result["errors"]:
        print(f"  error: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
