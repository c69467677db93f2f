"""What boots a board from its SD card: the kernel, device tree, initramfs and command line
read out of the card image's FAT boot partition (mtools, no mount), as the board's firmware
would load them."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..sources.kernel import Kernel
from ..writers.disk import PARTITION_START
from .qemu_system import QemuSetup


@dataclasses.dataclass
class CardBoot:
    kernel: Kernel  # the board's kernel, its image and device tree from the card
    setup: QemuSetup
    initrd: Path
    append: str  # cmdline.txt


def _config_value(config: str, key: str, default: str) -> str:
    m = re.search(rf"^\s*{key}\s*=\s*(\S+)", config, re.M)
    return m.group(1) if m else default


@contextlib.contextmanager
def card_boot_files(card: Path, kernel: Kernel, setup: QemuSetup) -> Iterator[CardBoot]:
    """Copy the boot partition's kernel, dtb, initramfs and cmdline.txt out of `card`."""
    if shutil.which("mcopy") is None:
        raise UserError("mcopy is not installed", hint="apt-get install mtools")
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    with tempfile.TemporaryDirectory(prefix="lxembed-card-") as tmp:
        def extract(name: str) -> Path:
            dest = Path(tmp, name)
            result = subprocess.run(["mcopy", "-n", "-i", f"{card}@@{PARTITION_START}",
                                     f"::/{name}", str(dest)], capture_output=True, text=True,
                                    env=env)
            if result.returncode != 0:
                raise UserError(f"{card}: no {name} in the boot partition "
                                f"({result.stderr.strip()[-200:]})")
            return dest
        config = extract("config.txt").read_text()
        image = extract(_config_value(config, "kernel", "vmlinuz"))
        dtb = extract(_config_value(config, "device_tree", os.path.basename(setup.dtb or "")))
        initrd = extract(next(iter(re.findall(r"^\s*initramfs\s+(\S+)", config, re.M)),
                              "initrd.img"))
        append = extract("cmdline.txt").read_text().strip()
        yield CardBoot(dataclasses.replace(kernel, image=image, vmlinux=None, dtbs=dtb.parent),
                       dataclasses.replace(setup, dtb=dtb.name), initrd, append)

