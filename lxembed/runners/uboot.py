"""Boot a FIT through U-Boot in qemu: U-Boot as the firmware (-bios), a boot disk made for the
run, the public key in U-Boot's control device tree.

The disk is what a board's boot medium would hold: an MBR with one FAT partition carrying
boot.scr (found by U-Boot's distro_bootcmd, which scans each disk's partitions for it) and the
FIT. boot.scr sets the kernel command line a -kernel test boot would have, loads the FIT and
runs `bootm`, which checks every image's hash and, where the control dtb holds a required key,
the configuration's signature. The control dtb is qemu's own, dumped with the run's exact
options (with -bios: virt swaps its GPIO for a GED then, and a dtb dumped without -bios makes
the kernel die probing the pl061), plus the key node the fit writer made. Everything is made in
a temporary directory: a runner never changes an image.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

from ..config import Board
from ..config.uboot import uboot_settings
from ..errors import UserError
from ..writers.disk import PARTITION_START, SECTOR, write_partitioned
from ..writers.fit import DATA_POSITION, tool, write_script_image
from ..writers.sdcard import write_fat
from .accel import Accel
from .qemu_system import QemuSetup, _console, kernel_cmdline

FIT_NAME = "boot.fit"


def check_firmware(board: Board, uboot: dict) -> None:
    if not Path(uboot["firmware"]).is_file():
        raise UserError(f"{board.path}: U-Boot firmware {uboot['firmware']} is not installed",
                        hint="apt-get install u-boot-qemu")


def boot_script(cmdline: str, fit_addr: str, arch: str, dest: Path, own_fdt: bool) -> None:
    """boot.scr: the kernel command line, then load and boot the FIT from the same partition;
    `own_fdt`: the FIT carries the board's device tree."""
    conf = f"{fit_addr}#conf-1"
    # ${devtype} ${devnum}:${distro_bootpart}: where distro_bootcmd found this script.
    text = (f"setenv bootargs \"{cmdline}\"\n"
            f"load ${{devtype}} ${{devnum}}:${{distro_bootpart}} {fit_addr} {FIT_NAME}\n"
            # The configuration by name: unnamed, this build picks one by matching the control
            # dtb's `compatible` (FIT_BEST_MATCH), and a FIT without a device tree matches
            # none. Such a FIT (qemu makes the machine's tree) hands the kernel U-Boot's own
            # control dtb: the machine's tree as qemu made it.
            f"bootm {conf}{'' if own_fdt else f' {conf} ${{fdtcontroladdr}}'}\n"
            # bootm returns only when it refused the FIT: say so and stop here rather than
            # fall through to distro_bootcmd's network boot (qemu runs with -no-reboot).
            "echo lxembed-uboot: the FIT was refused\nreset\n")
    dest.write_bytes(write_script_image(text, arch, dest.parent))


def boot_disk(fit: Path, script: Path, dest: Path) -> None:
    """An MBR disk with one FAT partition holding boot.scr and the FIT."""
    fat = dest.with_suffix(".fat")
    size = -(-(fit.stat().st_size + script.stat().st_size + (4 << 20)) // (1 << 20)) << 20
    write_fat(fat, {"boot.scr": script.read_bytes(), FIT_NAME: fit.read_bytes()}, size,
              0x4c58424f, 0)
    table = (f"label: dos\nunit: sectors\n\nstart={PARTITION_START // SECTOR}, "
             f"size={size // SECTOR}, type=c, bootable\n")
    write_partitioned(dest, [(PARTITION_START, fat)], table)
    fat.unlink()


def uboot_argv(setup: QemuSetup, uboot: dict, accel: Accel, disk: Path,
               interactive: bool = False, network: bool = True,
               device: bool = False) -> List[str]:
    """qemu with U-Boot as its firmware and the boot disk; no -kernel: U-Boot loads it.
    `device`: the disk is a device's own (written in place) and the guest reboots in the same
    qemu, as a board does: what a firmware's boot counting and updates need."""
    argv = [setup.binary, *accel.qemu_args(), "-M", setup.machine]
    if setup.cpu:
        argv += ["-cpu", setup.cpu]
    argv += ["-m", str(setup.memory), "-smp", str(setup.smp), "-nodefaults",
             *([] if device else ["-no-reboot"]),
             "-display", "none", *_console(interactive, None), "-bios", uboot["firmware"],
             # snapshot=on: a runner never changes an image, the disk included.
             "-drive", f"file={disk},format=raw,if=none,id=boot"
             f"{'' if device else ',snapshot=on'}",
             "-device", f"{uboot['disk']},drive=boot"]
    if network and setup.nic != "none":
        argv += ["-netdev", "user,id=n0", "-device", f"{setup.nic},netdev=n0,romfile="]
    if setup.watchdog:  # as a -kernel boot has it: the control dtb is dumped with it too
        argv += ["-device", setup.watchdog, "-action", "watchdog=reset"]
    return argv + setup.extra_args


# U-Boot reads /config from its control dtb: no autoboot countdown (2 s otherwise; the
# environment cannot be saved on virt's flash in qemu 7.2, so the dtb is the place).
CONFIG_DTS = "/ {\n\tconfig {\n\t\tbootdelay = <0>;\n\t};\n};\n"


def control_dtb(argv: List[str], key_dtb: Optional[Path], dest: Path) -> None:
    """qemu's device tree for exactly `argv`, with /config and the key node of `key_dtb`."""
    dumped = dest.with_suffix(".qemu.dtb")
    result = subprocess.run([*argv, "-machine", f"dumpdtb={dumped}"], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=60)
    if not dumped.exists():
        raise UserError(f"qemu could not dump its device tree: {result.stderr.strip()[-300:]}")
    dtc = tool("dtc", "device-tree-compiler")
    texts = []
    for dtb in (dumped, key_dtb) if key_dtb is not None else (dumped,):
        out = subprocess.run([dtc, "-q", "-I", "dtb", "-O", "dts", str(dtb)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise UserError(f"{dtb}: not a device tree ({out.stderr.strip()[-200:]})")
        texts.append(out.stdout)
    # Two root nodes in one source are merged by dtc: qemu's tree plus /signature/key-NAME.
    merged = "".join([texts[0], CONFIG_DTS] + [t.replace("/dts-v1/;", "", 1) for t in texts[1:]])
    out = subprocess.run([dtc, "-q", "-I", "dts", "-O", "dtb", "-o", str(dest), "-"],
                         input=merged, capture_output=True, text=True)
    if out.returncode != 0:
        raise UserError(f"dtc could not merge the key into qemu's tree: "
                        f"{out.stderr.strip()[-300:]}")


@contextlib.contextmanager
def uboot_run(board: Board, setup: QemuSetup, accel: Accel, fit: Path,
              key_dtb: Optional[Path] = None, verbose: bool = False, append: str = "",
              interactive: bool = False) -> Iterator[List[str]]:
    """The qemu command line that boots `fit` through the board's U-Boot, with its boot disk
    and control dtb alive until the block ends."""
    uboot = uboot_settings(board)
    check_firmware(board, uboot)
    if key_dtb is not None and not uboot["verify"]:
        raise UserError(f"{board.path}: this board's U-Boot checks no FIT signatures "
                        "(verify = false): a signed FIT would boot unchecked")
    with tempfile.TemporaryDirectory(prefix="lxembed-uboot-") as tmp:
        work = Path(tmp)
        # The kernel's data is DATA_POSITION into the FIT: loaded here, it lies at its load
        # address and U-Boot boots it in place.
        fit_addr = uboot["fit_addr"] or f"0x{int(uboot['kernel_load'], 0) - DATA_POSITION:x}"
        boot_script(kernel_cmdline(setup, verbose, append), fit_addr,
                    board.arch.uboot, work / "boot.scr", setup.dtb is not None)
        boot_disk(fit, work / "boot.scr", work / "boot.img")
        argv = uboot_argv(setup, uboot, accel, work / "boot.img", interactive=interactive)
        control_dtb(argv, key_dtb, work / "control.dtb")
        yield argv + ["-dtb", str(work / "control.dtb")]


@contextlib.contextmanager
def device_run(board: Board, setup: QemuSetup, accel: Accel, disk: Path,
               key_dtb: Optional[Path] = None, interactive: bool = False) -> Iterator[List[str]]:
    """The qemu command line that boots a firmware disk through the board's U-Boot, the disk
    itself being the device's storage: the caller passes a copy (a runner never changes an
    image) or a device disk it keeps between runs."""
    uboot = uboot_settings(board, "a firmware boot")
    check_firmware(board, uboot)
    with tempfile.TemporaryDirectory(prefix="lxembed-uboot-") as tmp:
        argv = uboot_argv(setup, uboot, accel, disk, interactive=interactive, device=True)
        control_dtb(argv, key_dtb, Path(tmp, "control.dtb"))
        yield argv + ["-dtb", str(Path(tmp, "control.dtb"))]


def copy_disk(image: Path, dest: Path) -> Path:
    """A sparse copy of a disk image: the device a run may change."""
    subprocess.run(["cp", "--sparse=always", str(image), str(dest)], check=True)
    return dest


def key_dtb_for(fit: Path) -> Optional[Path]:
    """The public key the fit writer wrote beside a signed FIT (FIT.key.dtb), if any."""
    path = fit.with_name(fit.name + ".key.dtb")
    return path if path.exists() else None
