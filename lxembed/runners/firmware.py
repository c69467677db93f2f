"""Boot an A/B firmware image (format firmware) through the board's U-Boot, as a device.

The disk qemu boots is the device's storage: U-Boot counts attempts in its env partition, the
first boot formats the data partition, an update writes the other slot. So the image itself is
never booted: either a sparse copy made for the run and deleted after it (a runner never changes
an image), or a device disk the user names (`--device DISK`), made from the image the first
time and then kept, updates and all, from run to run, so that updates can be tried by hand.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

from ..config import Board
from ..errors import UserError
from ..reports.firmware import is_gpt, partition_table
from . import Check
from .accel import Accel
from .qemu_system import QemuSetup
from .uboot import copy_disk, device_run

KEY_DTB = "rootfs.fit.key.dtb"  # the FIT key the firmware writer leaves beside the image

# The first check of a firmware boot: the running slot is marked good (first in the boot
# order, its attempts back, no trial), which the init does once the device is healthy, a
# moment after the ready marker; waited for (25 s at most), so that what the device says then
# on the console does not land in the other checks' output.
MARKED_GOOD = Check(
    "firmware-marked-good",
    # A subshell: its `exit` leaves it, not the console's shell.
    "(t=$(sed -n 's/^TRIES=//p' /sbin/lxembed-firmware); i=0; "
    "while s=$(lxembed-firmware status) && o=${s#slot } && o=${o%%,*} && "
    "case \"$s\" in *\"BOOT_ORDER=$o \"*\"BOOT_${o}_LEFT=$t\"*lxembed_trial=none*) false;; "
    "esac; do [ $i -ge 250 ] && echo \"$s\" && exit 1; i=$((i + 1)); usleep 100000; done; "
    "echo \"$s\" | head -n 1 | sed 's/$/: marked good/')",
    r"^slot [AB], version \S+: marked good$", "the firmware format")


def check_firmware_disk(path: Path, what: str) -> None:
    """`path` is a firmware disk lxembed wrote (its GPT partition names), or one line."""
    from ..config.firmware import PARTITIONS
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    if not is_gpt(path) or [p["name"] for p in partition_table(path)] != list(PARTITIONS):
        raise UserError(f"{what} {path} is not an lxembed firmware disk (format firmware: GPT "
                        f"with partitions {', '.join(PARTITIONS)})")


@contextlib.contextmanager
def device_disk(image: Path, device: Optional[Path]) -> Iterator[Path]:
    """The disk to boot: a copy of `image` for this run only, or `device`, created from
    `image` when it does not exist yet."""
    check_firmware_disk(image, "firmware image")
    if device is None:
        with tempfile.TemporaryDirectory(prefix="lxembed-device-") as tmp:
            yield copy_disk(image, Path(tmp, "device.img"))
        return
    if device.exists():
        check_firmware_disk(device, "--device")
    else:
        if not device.parent.is_dir():
            raise UserError(f"--device {device}: no directory {device.parent}")
        # Whole or not at all: a half-copied device disk would be kept and booted next time.
        partial = device.with_name(f".{device.name}.{os.getpid()}.tmp")
        try:
            copy_disk(image, partial)
            os.replace(partial, device)
        finally:
            partial.unlink(missing_ok=True)
    yield device


@contextlib.contextmanager
def firmware_run(board: Board, setup: QemuSetup, accel: Accel, image: Path,
                 device: Optional[Path] = None, interactive: bool = False
                 ) -> Iterator[List[str]]:
    """The qemu command line that boots the firmware `image` (or the `device` disk made from
    it) through U-Boot, with the FIT key the image was signed with in U-Boot's device tree."""
    key = image.with_name(KEY_DTB)
    with device_disk(image, device) as disk, \
            device_run(board, setup, accel, disk, key if key.exists() else None,
                       interactive=interactive) as argv:
        yield argv
