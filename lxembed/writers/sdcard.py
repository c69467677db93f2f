"""`sdcard`: a board's SD card image (the Raspberry Pi's layout), rootless and reproducible.

An MBR with a FAT boot partition and an ext4 root partition, made in files: mkfs.fat with a
fixed volume id (--invariant) filled by mtools' mcopy (file times the epoch, in UTC), the ext4
writer for the root (the tree plus the kernel's modules), sfdisk for the table. The boot
partition holds what the pipeline brings (the boot firmware, the board's Debian kernel as
`vmlinuz`, its device tree) and what is written here: config.txt, cmdline.txt and initrd.img,
the initramfs that loads the SD host drivers and mounts the root (see disk.py). QEMU's SD
emulation wants a power-of-two image, and so the card is padded to one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Optional

from ..config.settings import parse_size
from ..errors import UserError
from .cpio import write_cpio
from .disk import (
    PARTITION_START,
    SECTOR,
    STORAGE_MODULES,
    BootInputs,
    boot_initramfs,
    merged,
    write_partitioned,
)
from .ext4 import Ext4Options, write_ext4
from .flash import derived_number

FAT_EPOCH_MIN = 315532800  # 1980-01-01: FAT cannot store an earlier time


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"sdcard: {name} is not installed", hint=f"apt-get install {package}")
    return path


def write_fat(path: Path, files: Dict[str, bytes], size: int, volume_id: int, epoch: int) -> None:
    """A FAT filesystem of `size` bytes in `path` holding `files` (top level)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC",
           "MTOOLS_SKIP_CHECK": "1"}
    # --invariant before -i: it would reset the volume id to its own constant.
    result = subprocess.run([_tool("mkfs.fat", "dosfstools"), "-C", "--invariant",
                             "-i", f"{volume_id:08x}", "-n", "BOOT", str(path), str(size // 1024)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise UserError(f"sdcard: mkfs.fat failed: {result.stderr.strip()[-300:]}")
    when = max(epoch, FAT_EPOCH_MIN)
    with tempfile.TemporaryDirectory(prefix="lxembed-fat-") as tmp:
        staged = []
        for name in sorted(files):
            if "/" in name:
                raise UserError(f"sdcard: {name}: the boot partition holds top-level files only")
            dest = Path(tmp, name)
            dest.write_bytes(files[name])
            os.utime(dest, (when, when))
            staged.append(str(dest))
        # -m keeps the (epoch) modification time; -o overwrites without asking.
        result = subprocess.run([_tool("mcopy", "mtools"), "-m", "-o", "-i", str(path),
                                 *staged, "::/"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise UserError(f"sdcard: mcopy failed: {result.stderr.strip()[-300:]}")


def write_sdcard(tree, out, sdcard: dict, identity: str, epoch: int,
                 boot: Optional[BootInputs] = None, ext4: Optional[Ext4Options] = None) -> None:
    """The SD card image into the open file `out`; `sdcard` is the board's [sdcard] table."""
    boot = boot or BootInputs()
    root = merged(tree, boot.modules)
    storage = list(sdcard.get("modules") or []) + list(STORAGE_MODULES["ext4"][2:])
    initrd = boot_initramfs(tree, boot.modules, "ext4", "/dev/mmcblk0p2", epoch, storage)
    with tempfile.TemporaryDirectory(prefix="lxembed-sd-") as tmp:
        initrd_path, fat, fs, card = (Path(tmp, n) for n in ("initrd", "boot.fat", "root.ext4",
                                                             "card"))
        with open(initrd_path, "wb") as fh:
            write_cpio(initrd, fh)
        files = dict(boot.files)
        files["config.txt"] = (sdcard.get("config") or "").lstrip("\n").encode()
        files["cmdline.txt"] = (sdcard.get("cmdline") or "").strip().encode() + b"\n"
        files["initrd.img"] = initrd_path.read_bytes()
        boot_size = parse_size(sdcard.get("boot_size") or "64MiB")
        volume_id = int.from_bytes(derived_number(identity, epoch, "fat-volume-id", 4), "little")
        write_fat(fat, files, boot_size, volume_id, epoch)
        with open(fs, "wb") as fh:
            write_ext4(root, fh, epoch, identity + "/root", ext4)
        root_start = PARTITION_START + boot_size
        label_id = int.from_bytes(derived_number(identity, epoch, "mbr-disk-id", 4), "little")
        script = (f"label: dos\nlabel-id: 0x{label_id:08x}\nunit: sectors\n\n"
                  f"start={PARTITION_START // SECTOR}, size={boot_size // SECTOR}, type=c, "
                  "bootable\n"
                  f"start={root_start // SECTOR}, size={fs.stat().st_size // SECTOR}, type=83\n")
        write_partitioned(card, [(PARTITION_START, fat), (root_start, fs)], script)
        size = 1 << (card.stat().st_size - 1).bit_length()  # QEMU's SD card: a power of two
        os.truncate(card, size)
        with open(card, "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)
