"""Boot an initramfs image under qemu-system with the board's Debian kernel and test it.

The command line comes from the architecture table and the board's [qemu] profile; the serial
console is qemu's stdio on pipes, networking is qemu's user-mode stack with the arch's NIC.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple

from ..config import Board
from ..errors import UserError
from ..sources.kernel import Kernel
from . import READY, Check, TestReport, run_check
from .accel import Accel
from .console import ConsoleClosed, ConsoleTimeout, SerialConsole, tail

# KVM-sized timeouts in seconds; Accel.timeout() scales them for TCG.
BOOT_TIMEOUT = 10.0
CHECK_TIMEOUT = 5.0
POWEROFF_TIMEOUT = 3.0

# Kernel options for test boots. `quiet`: every console line costs emulated UART writes, and a
# clean console is easier to read; errors still show. `cryptomgr.notests`: skips the crypto
# self-tests, ~0.3 s of a 2 s TCG boot, irrelevant to what an image test proves. `nokaslr`: with
# KASLR the arm64 kernel turns on KPTI (a page-table switch on every kernel entry, costly under
# TCG: ~0.2 s of an arm64 boot); a fixed layout also makes runs repeatable. `norandmaps`, the
# same for processes: TCG keeps its translated code by virtual address, so with randomised maps
# every exec translates ld.so, libc and a PIE program again (a dynamic busybox run: 28 ms, not
# 9; python3 -IS: 109 ms, not 67; the kernel's six modprobe calls at boot: ~0.2 s).
FAST_APPEND = "quiet cryptomgr.notests nokaslr norandmaps"


@dataclass
class QemuSetup:
    """Everything that decides the qemu command line for one board."""

    binary: str
    machine: str
    cpu: Optional[str]
    memory: int
    smp: int
    console: str
    nic: str
    append: str
    extra_args: List[str] = field(default_factory=list)
    watchdog: Optional[str] = None  # a qemu watchdog device, when the image feeds one
    dtb: Optional[str] = None  # a device tree from the kernel's dtb directory
    disk_interface: str = "virtio"  # how a disk image is attached: virtio or sd
    serial: int = 0  # which qemu serial port is the console
    bios: Optional[str] = None  # firmware run before a direct kernel boot (RISC-V: OpenSBI)

    @classmethod
    def for_board(
        cls, board: Board, machine: Optional[str] = None, cpu: Optional[str] = None,
        smp: Optional[int] = None,
    ) -> "QemuSetup":
        qemu = board.qemu
        if qemu is None:
            raise UserError(
                f"board {board.name} has no [qemu] profile (real hardware)",
                hint="test it without a kernel: lxembed test --user",
            )
        arch = board.arch
        return cls(
            binary=arch.qemu_system_path,
            machine=machine or qemu["machine"] or arch.qemu_machine,
            cpu=cpu or qemu["cpu"] or arch.qemu_cpu,
            memory=qemu["memory"],
            smp=smp or qemu["smp"],
            console=qemu["console"] or arch.console,
            nic=qemu["nic"] or arch.nic,
            append=qemu["append"],
            extra_args=list(qemu["extra_args"]),
            dtb=qemu.get("dtb"),
            disk_interface=qemu.get("disk") or "virtio",
            serial=qemu.get("serial") or 0,
            watchdog=qemu.get("watchdog"),
            bios=arch.qemu_bios,
        )


def kernel_file(kernel: Kernel, direct: bool = True) -> Path:
    """The file to give -kernel: x86_64's ELF vmlinux boots straight into 64-bit mode (PVH),
    skipping real-mode setup and xz decompression: ~1 s less under TCG."""
    return kernel.vmlinux if direct and kernel.vmlinux is not None else kernel.image


def kernel_cmdline(setup: QemuSetup, verbose: bool = False, append: str = "") -> str:
    """The kernel command line of a test boot (-append, or a boot script's bootargs)."""
    cmdline = f"console={setup.console} panic=-1"
    if not verbose:
        cmdline += f" {FAST_APPEND}"
    return " ".join(x for x in (cmdline, setup.append, append) if x)


def qemu_argv(
    setup: QemuSetup,
    kernel: Kernel,
    initrd: Path,
    accel: Accel,
    *,
    interactive: bool = False,
    verbose: bool = False,
    append: str = "",
    network: bool = True,
    direct: bool = True,
    disk: Optional[Path] = None,
    console_log: Optional[Path] = None,
) -> List[str]:
    """The qemu-system command line that boots `initrd` with `kernel` (and `disk` attached as
    a virtio disk, the root for a disk image's initrd)."""
    cmdline = kernel_cmdline(setup, verbose, append)
    argv = [setup.binary, *accel.qemu_args(), "-M", setup.machine]
    if setup.cpu:
        argv += ["-cpu", setup.cpu]
    if setup.bios:  # RISC-V: the machine-mode firmware that starts the kernel
        argv += ["-bios", setup.bios]
    argv += [
        "-m",
        str(setup.memory),
        "-smp",
        str(setup.smp),
        # No default VGA, floppy, CD-ROM or NIC: less to emulate, nothing we do not ask for.
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        # Interactive: Ctrl-A X quits, Ctrl-A C reaches the monitor. Tests: the console alone.
        *["-serial", "null"] * setup.serial,
        *_console(interactive, console_log),
        "-kernel",
        str(kernel_file(kernel, direct)),
        "-initrd",
        str(initrd),
        "-append",
        cmdline,
    ]
    if setup.dtb:
        argv += ["-dtb", str(kernel.dtb(setup.dtb))]
    if disk is not None:
        # snapshot=on: the guest's writes go to a temporary overlay; a runner never changes
        # an image.
        if setup.disk_interface == "sd":
            argv += ["-drive", f"file={disk},format=raw,if=sd,snapshot=on"]
        else:
            argv += ["-drive", f"file={disk},format=raw,if=none,id=root,snapshot=on",
                     "-device", "virtio-blk-pci,drive=root"]
    if network and setup.nic != "none":
        # romfile=: no PXE option ROM to load, nobody boots from the network here.
        argv += ["-netdev", "user,id=n0", "-device", f"{setup.nic},netdev=n0,romfile="]
    if setup.watchdog:  # the hardware resets a guest that stops feeding it
        argv += ["-device", setup.watchdog, "-action", "watchdog=reset"]
    return argv + setup.extra_args


def _console(interactive: bool, log: Optional[Path]) -> List[str]:
    """The serial console on stdio (with the monitor when interactive), and copied to `log`."""
    if log is None:
        return ["-serial", "mon:stdio" if interactive else "stdio"]
    return ["-chardev", f"stdio,id=console,mux={'on' if interactive else 'off'},signal=off,"
            f"logfile={log}", "-serial", "chardev:console"] + (
        ["-mon", "chardev=console"] if interactive else [])


def _stop(proc: subprocess.Popen, grace: float) -> bool:
    """Wait for qemu to exit; kill it after `grace` s. True if it exited by itself."""
    try:
        proc.wait(timeout=grace)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


@contextlib.contextmanager
def running_guest(argv: Sequence[str], log: BinaryIO) -> Iterator[Tuple[subprocess.Popen,
                                                                         SerialConsole]]:
    """qemu started with its serial console on a pipe, logged to `log`; killed and its pipes
    closed on the way out, whatever happened inside."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, SerialConsole(proc.stdout.fileno(), proc.stdin.fileno(), log)
    finally:
        if proc.poll() is None:
            _stop(proc, 0)
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


@dataclass
class GuestRun:
    """Options for one non-interactive boot."""

    boot_timeout: Optional[float] = None  # seconds to the ready marker (default: scaled)
    check_timeout: Optional[float] = None
    verbose: bool = False
    direct: bool = True
    disk: Optional[Path] = None  # a disk image attached as a virtio disk (or SD card)
    append: str = ""  # more kernel command line (an SD card's cmdline.txt)
    timeline: bool = False  # read the init's boot timeline once the checks have run
    argv: Optional[List[str]] = None  # this command line instead (a boot through U-Boot)


TIMELINE_FILE = "/run/lxembed/timeline"  # the Python init's boot events (docs/init.md)


def check_guest(
    board: Board,
    recipe: str,
    setup: QemuSetup,
    kernel: Kernel,
    initrd: Path,
    accel: Accel,
    checks: Sequence[Check],
    log_path: Path,
    run: Optional[GuestRun] = None,
) -> TestReport:
    """Boot, wait for the ready marker, run `checks` over the console, power off."""
    run = run or GuestRun()
    boot_timeout = run.boot_timeout or accel.timeout(BOOT_TIMEOUT)
    check_timeout = run.check_timeout or accel.timeout(CHECK_TIMEOUT)
    report = TestReport(
        board.name, recipe, "system", accel.name, console_log=str(log_path), kernel=kernel.pin()
    )
    argv = run.argv or qemu_argv(setup, kernel, initrd, accel, verbose=run.verbose,
                                 direct=run.direct, disk=run.disk, append=run.append)
    if shutil.which(argv[0]) is None:
        raise UserError(f"{argv[0]} is not installed", hint="apt-get install qemu-system")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "wb") as log:
        log.write(f"# {shlex.join(argv)}\n".encode())
        log.flush()
        with running_guest(argv, log) as (proc, console):
            try:
                _drive(console, report, checks, boot_timeout, check_timeout, start)
                if run.timeline and not report.error:
                    status, text = console.run(f"cat {TIMELINE_FILE}", check_timeout)
                    report.timeline = text if status == 0 else None
                if not report.error:
                    console.send("sync; poweroff -f\n")
                    # Read on until qemu exits (EOF): the log ends with the kernel's power-off.
                    console.drain(accel.timeout(POWEROFF_TIMEOUT))
                    if not _stop(proc, 1.0):
                        report.error = "the guest did not power off (qemu killed)"
            except ConsoleClosed:
                report.error = report.error or (
                    f"qemu exited during the test (status {proc.poll()}); see the console log"
                )
    report.seconds = round(time.monotonic() - start, 3)
    return report


def _drive(
    console: SerialConsole,
    report: TestReport,
    checks: Sequence[Check],
    boot_timeout: float,
    check_timeout: float,
    start: float,
) -> None:
    try:
        console.expect(READY, boot_timeout)
    except ConsoleTimeout:
        report.error = (
            f"the guest did not print the ready marker within {boot_timeout:.0f} s "
            "(hung guest killed)"
        )
        return
    report.boot_seconds = round(time.monotonic() - start, 3)
    try:
        console.sync(check_timeout)
    except ConsoleTimeout:
        report.error = "ready, but no shell answers on the console"
        return
    status, output = console.run("cat /proc/uptime", check_timeout)
    m = re.match(r"\s*([\d.]+)", output or "")
    if status == 0 and m:
        report.guest_uptime = float(m.group(1))
    for check in checks:
        report.checks.append(run_check(check, lambda cmd: console.run(cmd, check_timeout),
                                       check_timeout, "interrupted"))


def boot_interactive(
    setup: QemuSetup,
    kernel: Kernel,
    initrd: Path,
    accel: Accel,
    verbose: bool = True,
    direct: bool = True,
    disk: Optional[Path] = None,
    append: str = "",
    console_log: Optional[Path] = None,
) -> int:
    """qemu on this terminal: the serial console and, after Ctrl-A C, the monitor; the
    console also copied to `console_log`."""
    argv = qemu_argv(setup, kernel, initrd, accel, interactive=True, verbose=verbose, direct=direct,
                     disk=disk, append=append, console_log=console_log)
    if shutil.which(argv[0]) is None:
        raise UserError(f"{argv[0]} is not installed", hint="apt-get install qemu-system")
    return subprocess.call(argv)


def failure_text(report: TestReport, lines: int = 30) -> str:
    """What a failed run shows: the error, then the end of the console log."""
    out = [report.error] if report.error else []
    if report.console_log and os.path.exists(report.console_log):
        out.append(f"console log: {report.console_log} (last {lines} lines):")
        out.append(tail(Path(report.console_log), lines))
    return "\n".join(out)


@contextlib.contextmanager
def initramfs_with_modules(image: Path) -> Iterator[Path]:
    """The rootfs initramfs with the build's kernel-modules segment appended (if there is one).

    The kernel unpacks concatenated archives in order. The joined copy is a temporary file:
    a runner never changes an image.
    """
    modules = image.with_name("modules" + image.name[len("rootfs"):])
    if not image.name.startswith("rootfs.") or not modules.exists():
        yield image
        return
    with tempfile.NamedTemporaryFile(prefix="lxembed-initrd-", suffix=image.suffix) as joined:
        joined.write(image.read_bytes())
        joined.write(modules.read_bytes())
        joined.flush()
        yield Path(joined.name)
