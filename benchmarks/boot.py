#!/usr/bin/env python3
"""Boot-to-ready per qemu board: host wall time (qemu start to the ready marker on the serial
console) and the guest's own uptime at that moment (/proc/uptime).

    python3 benchmarks/boot.py                       # every qemu board, busybox, 3 boots each
    python3 benchmarks/boot.py -b qemu-arm64 -n 5 --format cpio.gz
    python3 benchmarks/boot.py -b qemu-x86_64 --machine q35 --cpu qemu64,+rdrand

The boots use exactly what `lxembed test` uses (same command line, kernel options and image),
without the checks. Wall time minus guest uptime is qemu's start, firmware, and the kernel's
self-decompression (zImage, mips vmlinuz, bzImage), which the guest clock does not see.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxembed import log  # noqa: E402
from lxembed.config import list_boards, load_board, load_plan  # noqa: E402
from lxembed.errors import UserError  # noqa: E402
from lxembed.pipeline import ensure_image, image_dir  # noqa: E402
from lxembed.runners.accel import choose_accel  # noqa: E402
from lxembed.runners.qemu_system import QemuSetup, check_guest  # noqa: E402
from lxembed.sources.kernel import fetch_kernel  # noqa: E402

# Goals under TCG on the reference machine (2 shared cores), by Debian arch; others: 5 s.
GOALS = {"arm64": 1.5, "amd64": 2.0}
DEFAULT_GOAL = 5.0


def bench(board: str, recipe: str, repeat: int, fmt: str, machine, cpu) -> dict:
    plan = load_plan(board, recipe)
    setup = QemuSetup.for_board(plan.board, machine, cpu)
    kernel = fetch_kernel(plan.board)
    image = ensure_image(plan, image_dir(plan, None, fmt), fmt, None, kernel)
    accel = choose_accel(plan.arch)
    walls, uptimes, errors = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            report = check_guest(
                plan.board, recipe, setup, kernel, image, accel, [], Path(tmp) / f"console-{i}.log"
            )
            if report.error:
                errors.append(report.error)
                continue
            walls.append(report.boot_seconds)
            if report.guest_uptime is not None:
                uptimes.append(report.guest_uptime)
    goal = GOALS.get(plan.arch.debian, DEFAULT_GOAL)
    wall = statistics.median(walls) if walls else None
    return {
        "board": board,
        "arch": plan.arch.debian,
        "accel": accel.name,
        "machine": setup.machine,
        "cpu": setup.cpu,
        "initrd": fmt,
        "initrd_bytes": image.stat().st_size,
        "kernel": kernel.pin(),
        "wall_median": wall,
        "wall_min": min(walls) if walls else None,
        "uptime_median": statistics.median(uptimes) if uptimes else None,
        "boots": len(walls),
        "errors": errors,
        "goal": goal,
        "meets_goal": wall is not None and wall < goal,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-b",
        "--board",
        action="append",
        help="board (repeatable; default: every board with a [qemu] profile)",
    )
    parser.add_argument("-r", "--recipe", default="busybox")
    parser.add_argument("-n", "--repeat", type=int, default=3, help="boots per board")
    parser.add_argument(
        "--format",
        default="cpio",
        help="initramfs format: cpio, cpio.gz, "
        "cpio.zst (default: cpio, uncompressed boots fastest)",
    )
    parser.add_argument("--machine", help="override the board's qemu machine")
    parser.add_argument("--cpu", help="override the board's qemu CPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.set_quiet(True)
    boards = args.board or [b for b in list_boards() if load_board(b).qemu is not None]
    rows = []
    try:
        for board in boards:
            rows.append(bench(board, args.recipe, args.repeat, args.format, args.machine, args.cpu))
            if not args.json:
                _print_row(rows[-1], header=len(rows) == 1)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0 if all(r["meets_goal"] for r in rows) else 1


def _fmt(value) -> str:
    return f"{value:6.2f}" if value is not None else "     -"


def _print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'board':15} {'arch':8} {'accel':5} {'machine':18} {'wall s':>6} {'min':>6} "
            f"{'uptime':>6} {'goal':>5}  result"
        )
    verdict = "ok" if row["meets_goal"] else "SLOWER THAN GOAL"
    if row["errors"]:
        verdict += f" ({len(row['errors'])} failed: {row['errors'][0]})"
    print(
        f"{row['board']:15} {row['arch']:8} {row['accel']:5} {row['machine']:18} "
        f"{_fmt(row['wall_median'])} {_fmt(row['wall_min'])} {_fmt(row['uptime_median'])} "
        f"{row['goal']:5.1f}  {verdict}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
