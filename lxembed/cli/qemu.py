"""lxembed boot | test: run an image under qemu-system (Debian kernel) or qemu-user."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from .. import log
from ..errors import UserError
from .common import add_target_args

if TYPE_CHECKING:  # annotations only: the modules load when a command runs
    from ..config import Plan
    from ..runners import TestReport


def _explicit_image(args, fmt: str) -> Optional[Path]:
    if not args.image:
        return None
    path = Path(args.image)
    if fmt == "dir" and path.is_dir() and (path / "rootfs").is_dir():
        path = path / "rootfs"
    if fmt != "dir" and path.is_dir():
        candidates = sorted(path.glob("rootfs.cpio*"))
        if not candidates:
            raise UserError(f"{path} holds no rootfs.cpio* image")
        path = candidates[0]
    if not path.exists():
        raise UserError(f"image {path} does not exist")
    if fmt == "dir" and not path.is_dir():
        raise UserError(f"--user needs a directory image (format dir), not {path}")
    return path


def _disk_image(plan: Plan, args, kernel) -> Tuple[Path, Path]:
    """--root FORMAT: the board's disk image with that root filesystem, and its initrd."""
    from ..pipeline import ensure_image, image_dir
    fmt = "sdcard" if args.root == "sdcard" else f"disk.{args.root}"
    if args.image:
        disk = Path(args.image)
        if disk.is_dir():
            disk = disk / f"rootfs.{fmt}"
    else:
        disk = ensure_image(plan, image_dir(plan, args.output, fmt), fmt, args.mirror, kernel,
                            args.rebuild)
    initrd = disk.with_name(disk.name + ".initrd") if fmt != "sdcard" else disk
    for path in (disk, initrd):
        if not path.exists():
            raise UserError(f"{path} does not exist", hint=f"build it with --format {fmt}")
    return disk, initrd


def cmd_boot(args) -> int:
    from ..config import load_plan
    from ..pipeline import ensure_image, image_dir
    from ..runners.accel import choose_accel
    from ..runners.qemu_system import QemuSetup, boot_interactive, initramfs_with_modules
    from ..sources.kernel import describe, fetch_kernel
    plan = load_plan(args.board, args.recipe)
    setup = QemuSetup.for_board(plan.board, args.machine, args.cpu, args.smp)
    if _firmware_asked(args):
        return _boot_firmware(plan, args, setup)
    kernel = fetch_kernel(plan.board, args.mirror)
    accel = choose_accel(plan.arch, args.accel)
    if args.boot == "uboot":
        from ..config.uboot import uboot_settings
        from ..runners.uboot import key_dtb_for, uboot_run
        uboot_settings(plan.board)
        fit = _fit_image(plan, args, kernel)
        log.info(f"booting {plan.board.name}/{plan.recipe.name} through U-Boot from "
                 f"{fit.name} ({accel.name}: {accel.reason}); Ctrl-A X quits")
        with uboot_run(plan.board, setup, accel, fit, key_dtb_for(fit), not args.quiet_kernel,
                       interactive=True) as argv:
            return subprocess.call(argv)
    if args.root:
        disk, initrd = _disk_image(plan, args, kernel)
        log.info(f"booting {plan.board.name}/{plan.recipe.name} from {disk.name} with "
                 f"{describe(kernel)} ({accel.name}: {accel.reason}); Ctrl-A X quits")
        with _card(disk, args.root, kernel, setup, initrd) as (kernel, setup, initrd, append):
            return boot_interactive(setup, kernel, initrd, accel, verbose=not args.quiet_kernel,
                                    direct=not args.no_direct, disk=disk, append=append)
    image = _explicit_image(args, "cpio") or ensure_image(
        plan, image_dir(plan, args.output, "cpio"), "cpio", args.mirror, kernel, args.rebuild
    )
    log.info(
        f"booting {plan.board.name}/{plan.recipe.name} with {describe(kernel)} "
        f"({accel.name}: {accel.reason}); Ctrl-A X quits"
    )
    console_log = image.parent / "boot-console.log" if args.timeline else None
    with initramfs_with_modules(image) as initrd:
        status = boot_interactive(
            setup, kernel, initrd, accel, verbose=not args.quiet_kernel, direct=not args.no_direct,
            append=ECHO_FLAG if args.timeline else "", console_log=console_log
        )
    if args.timeline:  # the init echoed its events on the console: they are in its copy
        text = console_log.read_text(errors="replace") if console_log.exists() else ""
        events = "\n".join(line.split(ECHO_PREFIX, 1)[1] for line in text.splitlines()
                           if ECHO_PREFIX in line)
        _write_timeline(events, accel.name, Path(args.timeline),
                        f"{plan.board.name}/{plan.recipe.name}")
    return status


def cmd_test(args) -> int:
    from ..config import load_plan
    from ..runners.qemu_system import failure_text
    plan = load_plan(args.board, args.recipe)
    if args.user and (args.boot == "uboot" or args.root == "firmware"):
        raise UserError("--boot uboot and --root firmware boot under qemu-system: they take "
                        "no --user")
    if args.user:
        report = _test_user(plan, args)
    else:
        report = _test_system(plan, args)
    if args.timeline:
        _write_timeline(report.timeline or "", report.accel, Path(args.timeline),
                        f"{plan.board.name}/{plan.recipe.name}")
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report)
    if not report.ok and not args.json:
        text = failure_text(report) if report.mode == "system" else report.error
        if text:
            print(text, file=sys.stderr)
    return 0 if report.ok else 1


def _test_system(plan: Plan, args) -> TestReport:
    from ..pipeline import ensure_image, image_dir
    from ..runners import load_checks
    from ..runners.accel import choose_accel
    from ..runners.qemu_system import GuestRun, QemuSetup, check_guest, initramfs_with_modules
    from ..sources.kernel import describe, fetch_kernel
    setup = QemuSetup.for_board(plan.board, args.machine, args.cpu, args.smp)
    if _firmware_asked(args):
        return _test_firmware(plan, args, setup)
    if args.boot == "uboot":
        return _test_uboot(plan, args, setup)
    checks = load_checks(plan, "system")
    kernel = fetch_kernel(plan.board, args.mirror)
    disk = None
    if args.root:
        disk, image = _disk_image(plan, args, kernel)
    else:
        out = image_dir(plan, args.output, "cpio")
        image = _explicit_image(args, "cpio") or ensure_image(
            plan, out, "cpio", args.mirror, kernel, args.rebuild
        )
    accel = choose_accel(plan.arch, args.accel)
    root = f", root on {disk.name}" if disk else ""
    log.info(
        f"{plan.board.name}/{plan.recipe.name}: {describe(kernel)}, {accel.name} ({accel.reason})"
        + root
    )
    log_path = image.parent / "console.log"
    run = GuestRun(
        boot_timeout=args.timeout, verbose=args.verbose_kernel, direct=not args.no_direct,
        disk=disk, timeline=bool(args.timeline)
    )
    if disk is not None:
        with _card(disk, args.root, kernel, setup, image) as (kernel, setup, initrd, append):
            run.append = append
            return check_guest(plan.board, plan.recipe.name, setup, kernel, initrd, accel,
                               checks, log_path, run)
    with initramfs_with_modules(image) as initrd:
        return check_guest(
            plan.board, plan.recipe.name, setup, kernel, initrd, accel, checks, log_path, run
        )


def _fit_image(plan: Plan, args, kernel) -> Path:
    """--boot uboot: the board's FIT (format fit), built unless --image names one."""
    from ..pipeline import ensure_image, image_dir
    if args.root:
        raise UserError("--boot uboot boots the FIT's initramfs: it takes no --root")
    if args.image:
        fit = Path(args.image)
        fit = fit / "rootfs.fit" if fit.is_dir() else fit
        if not fit.exists():
            raise UserError(f"{fit} does not exist", hint="build it with --format fit")
        return fit
    return ensure_image(plan, image_dir(plan, args.output, "fit"), "fit", args.mirror, kernel,
                        args.rebuild)


def _test_uboot(plan: Plan, args, setup) -> TestReport:
    from ..config.uboot import uboot_settings
    from ..runners import load_checks
    from ..runners.accel import choose_accel
    from ..runners.qemu_system import GuestRun, check_guest
    from ..runners.uboot import key_dtb_for, uboot_run
    from ..sources.kernel import describe, fetch_kernel
    uboot_settings(plan.board)  # a board without U-Boot: refused before anything is built
    checks = load_checks(plan, "system")
    kernel = fetch_kernel(plan.board, args.mirror)
    fit = _fit_image(plan, args, kernel)
    accel = choose_accel(plan.arch, args.accel)
    key = key_dtb_for(fit)
    log.info(f"{plan.board.name}/{plan.recipe.name}: U-Boot, {fit.name}"
             f"{' (signed)' if key else ''} with {describe(kernel)}, {accel.name} "
             f"({accel.reason})")
    with uboot_run(plan.board, setup, accel, fit, key, args.verbose_kernel) as argv:
        run = GuestRun(boot_timeout=args.timeout, verbose=args.verbose_kernel, argv=argv,
                       timeline=bool(args.timeline))
        return check_guest(plan.board, plan.recipe.name, setup, kernel, fit, accel, checks,
                           fit.parent / "console.log", run)


def _firmware_asked(args) -> bool:
    """--root firmware (or --device, which only it takes)."""
    if args.device and args.root != "firmware":
        raise UserError("--device boots a firmware device disk: it goes with --root firmware")
    return args.root == "firmware"


def _firmware_image(plan: Plan, args) -> Tuple[Path, object]:
    """--root firmware: the board's firmware image (format firmware), built unless --image
    names one, and the kernel it was built with; a board without U-Boot is refused first."""
    from ..config.uboot import uboot_settings
    from ..pipeline import ensure_image, image_dir
    from ..sources.kernel import fetch_kernel
    uboot_settings(plan.board, "--root firmware")
    kernel = fetch_kernel(plan.board, args.mirror)
    if args.image:
        image = Path(args.image)
        image = image / "rootfs.firmware" if image.is_dir() else image
        if not image.exists():
            raise UserError(f"{image} does not exist", hint="build it with --format firmware")
        return image, kernel
    return ensure_image(plan, image_dir(plan, args.output, "firmware"), "firmware",
                        args.mirror, kernel, args.rebuild), kernel


def _boot_firmware(plan: Plan, args, setup) -> int:
    from ..runners.accel import choose_accel
    from ..runners.firmware import firmware_run
    image, _ = _firmware_image(plan, args)
    accel = choose_accel(plan.arch, args.accel)
    device = Path(args.device) if args.device else None
    where = f"the device disk {device}" if device else f"a copy of {image.name}"
    log.info(f"booting {plan.board.name}/{plan.recipe.name} through U-Boot from {where} "
             f"({accel.name}: {accel.reason}); Ctrl-A X quits")
    with firmware_run(plan.board, setup, accel, image, device, interactive=True) as argv:
        return subprocess.call(argv)


def _test_firmware(plan: Plan, args, setup) -> TestReport:
    """The recipe's checks on the firmware booted through U-Boot from its own disk; the
    guest reboots in place as a device does, `poweroff -f` ends the run."""
    from ..runners import load_checks
    from ..runners.accel import choose_accel
    from ..runners.firmware import MARKED_GOOD, firmware_run
    from ..runners.qemu_system import GuestRun, check_guest
    from ..sources.kernel import describe
    image, kernel = _firmware_image(plan, args)
    checks = [MARKED_GOOD] + load_checks(plan, "system")
    accel = choose_accel(plan.arch, args.accel)
    device = Path(args.device) if args.device else None
    log.info(f"{plan.board.name}/{plan.recipe.name}: U-Boot, {image.name}"
             f"{f' on the device disk {device}' if device else ''} with {describe(kernel)}, "
             f"{accel.name} ({accel.reason})")
    with firmware_run(plan.board, setup, accel, image, device) as argv:
        run = GuestRun(boot_timeout=args.timeout, verbose=args.verbose_kernel, argv=argv,
                       timeline=bool(args.timeline))
        return check_guest(plan.board, plan.recipe.name, setup, kernel, image, accel, checks,
                           image.parent / "console.log", run)


def _write_timeline(text: str, accel: str, path: Path, title: str) -> None:
    """PATH.json (every event, spans, milestones) and PATH.svg (the boot as a Gantt chart)."""
    from ..reports.timeline import parse_events, timeline_json, timeline_svg
    events = parse_events(text)
    if not events:
        log.warn("no boot timeline: the image's init is not the Python init, or the run "
                 "ended before it wrote one")
        return
    base = path.with_suffix("") if path.suffix in (".json", ".svg") else path
    base.parent.mkdir(parents=True, exist_ok=True)
    title = f"{title}: boot timeline (CLOCK_MONOTONIC seconds, TCG)" if accel == "tcg" \
        else f"{title}: boot timeline (CLOCK_MONOTONIC seconds)"
    base.with_suffix(".json").write_text(timeline_json(events, title))
    base.with_suffix(".svg").write_text(timeline_svg(events, title))
    log.info(f"boot timeline: {base.with_suffix('.svg')} and .json")


# What the init looks for on the kernel command line to echo its events (lxembed/init/lxinit.py).
ECHO_FLAG = "lxembed.timeline"
ECHO_PREFIX = "lxembed-timeline: "


@contextlib.contextmanager
def _card(disk: Path, root: str, kernel, setup, initrd):
    """An SD card boots what its boot partition holds; a disk, its initrd with the kernel."""
    from ..runners.boot_media import card_boot_files
    if root != "sdcard":
        yield kernel, setup, initrd, ""
        return
    with card_boot_files(disk, kernel, setup) as card:
        yield card.kernel, card.setup, card.initrd, card.append


def _test_user(plan: Plan, args) -> TestReport:
    from ..pipeline import ensure_image, image_dir
    from ..runners import load_checks
    from ..runners.qemu_user import check_tree
    checks = load_checks(plan, "user")
    root = _explicit_image(args, "dir") or ensure_image(
        plan, image_dir(plan, args.output, "dir"), "dir", args.mirror, None, args.rebuild
    )
    return check_tree(plan.board.name, plan.recipe.name, plan.arch, root, checks, args.timeout)


def print_report(report: TestReport) -> None:
    head = f"{report.board}/{report.recipe} ({report.mode}, {report.accel})"
    if report.boot_seconds is not None:
        uptime = f", guest uptime {report.guest_uptime:.2f} s" if report.guest_uptime else ""
        head += f": ready in {report.boot_seconds:.2f} s{uptime}"
    print(head)
    width = max((len(c.name) for c in report.checks), default=0)
    for c in report.checks:
        first = (c.output.splitlines() or [""])[0]
        more = " ..." if len(c.output.splitlines()) > 1 else ""
        detail = c.error or (f"(status {c.status}) " if c.status else "") + first + more
        print(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:{width}}  {detail}")
    passed = sum(c.ok for c in report.checks)
    verdict = "passed" if report.ok else "FAILED"
    if report.error and not report.checks:
        print(f"FAILED after {report.seconds:.2f} s, no checks run")
    else:
        print(f"{passed}/{len(report.checks)} checks passed in {report.seconds:.2f} s: {verdict}")


def _add_common(p: argparse.ArgumentParser) -> None:
    add_target_args(p)
    p.add_argument("--output", "-o", help="image directory (default: one in the cache)")
    p.add_argument(
        "--image", help="boot this built image (rootfs.cpio*, or its directory) instead of building"
    )
    p.add_argument("--rebuild", action="store_true", help="build even if the image is current")
    p.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default=None,
        help="qemu accelerator (default: KVM only if it can run the guest)",
    )
    p.add_argument(
        "--root",
        choices=("ext4", "squashfs", "sdcard", "firmware"),
        help="boot from the board's disk image (format disk.ROOT) as a virtio disk, through "
        "its initramfs, instead of from an initramfs image; sdcard: the board's SD card "
        "image, kernel and initramfs from its boot partition; firmware: the board's A/B "
        "firmware image (format firmware) through its U-Boot, from a copy of the disk made "
        "for the run (or --device)",
    )
    p.add_argument(
        "--device", metavar="DISK",
        help="with --root firmware: boot this device disk, written in place and kept between "
        "runs (boot state, data, installed updates), as a device's storage; made from the "
        "firmware image the first time",
    )
    p.add_argument(
        "--boot",
        choices=("kernel", "uboot"),
        default="kernel",
        help="kernel: qemu loads the kernel and initramfs itself (-kernel); uboot: the "
        "board's U-Boot (u-boot-qemu, -bios) loads, verifies and boots the image's FIT "
        "(format fit) from a boot disk made for the run",
    )
    p.add_argument("--machine", help="override the board's qemu machine")
    p.add_argument("--cpu", help="override the board's qemu CPU")
    p.add_argument("--smp", type=int, metavar="N",
                   help="override the board's number of guest CPUs (TCG runs each on a host "
                   "thread)")
    p.add_argument(
        "--no-direct",
        action="store_true",
        help="boot the packaged vmlinuz even where a direct ELF boot is possible",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser("boot", help="boot an image under qemu-system, on this terminal")
    _add_common(p)
    p.add_argument("--quiet-kernel", action="store_true", help="boot with `quiet`")
    p.add_argument("--timeline", metavar="PATH",
                   help="when qemu exits, write the boot's timeline (the Python init's events, "
                   "echoed on the console) as PATH.json and a Gantt chart PATH.svg")
    p.set_defaults(func=cmd_boot)

    p = subparsers.add_parser(
        "test", help="boot an image (or run it under qemu-user) and run its checks"
    )
    _add_common(p)
    p.add_argument(
        "--user",
        action="store_true",
        help="run the checks under qemu-user in the image tree (no kernel)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--timeline", metavar="PATH",
                   help="write the boot's timeline (the Python init's events) as PATH.json and "
                   "a Gantt chart PATH.svg")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the ready marker (qemu-user: per check); a hung "
        "guest is killed (default: 60 under TCG, 10 under KVM)",
    )
    p.add_argument(
        "--verbose-kernel",
        action="store_true",
        help="boot without `quiet`: every kernel message in the console log",
    )
    p.set_defaults(func=cmd_test)
