"""`firmware`: an A/B firmware disk image for a board whose U-Boot lxembed drives, rootless and
byte-identical, plus the update bundle that installs the same image into the other slot.

The disk (GPT, partitions named as below, what `sfdisk -J` shows):
  1 boot  FAT: boot.scr, U-Boot's boot script (firmware_boot.py), never rewritten
  2 env   the boot state: a U-Boot environment in libubootenv's redundant layout
  3 a     slot A: ext4 of the root, with the slot's signed FIT in /boot (kernel, device tree,
          the initramfs that mounts this slot under the data overlay)
  4 b     slot B: empty until the first update
  5 data  the overlay's upper layer and the containers' data; blank: the first boot formats it
Slots and data are sized by the recipe's [firmware] table, fixed for the device's life: an
update writes a new slot image into the same partition. Unwritten space stays a hole in the
output file (a 300 MB image of a 60 MB root costs 60 MB of disk).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional

from ..config.firmware import BOOT_SIZE, MIB, PARTITIONS, FirmwareSettings
from ..errors import UserError
from ..tree import RootfsTree
from .disk import PARTITION_START, SECTOR, boot_initramfs, merged, write_table
from .ext4 import Ext4Options, write_ext4
from .firmware_boot import ENV_SIZE, FIT_PATH, BootLayout, boot_script, initial_env
from .firmware_init import firmware_init_script
from .fit import DATA_POSITION, FitInputs, tool, write_fit, write_script_image
from .flash import derived_number
from .sdcard import write_fat

# What the firmware's initramfs loads to reach the slot and the data partition.
FIRMWARE_MODULES = ("virtio_mmio", "virtio_pci", "virtio_blk", "crc32c_generic", "ext4",
                    "overlay")
LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B7C799C7"  # what U-Boot's distro boot scans for boot.scr


def firmware_initramfs(tree: RootfsTree, modules: Optional[RootfsTree], fw: FirmwareSettings,
                       epoch: int) -> RootfsTree:
    """The FIT's initramfs: busybox, the storage modules, the firmware /init."""
    boot = boot_initramfs(tree, modules, "ext4", fw.partition("a"), epoch,
                          [m for m in FIRMWARE_MODULES if _has_module(modules, m)])
    boot.write("/init", firmware_init_script(fw.partition("data")).encode(), mode=0o755,
               mtime=epoch, origin="firmware boot")
    return boot


def _has_module(modules: Optional[RootfsTree], name: str) -> bool:
    """A module the kernel has as a file (built-in ones are not listed, nor needed)."""
    if modules is None:
        return False
    want = {f"{name}.ko", f"{name}.ko.xz", f"{name}.ko.zst"}
    return any(os.path.basename(p) in want or os.path.basename(p).replace("-", "_") in want
               for p, _ in modules)


def write_slot(tree: RootfsTree, modules: Optional[RootfsTree], fit: FitInputs,
               fw: FirmwareSettings, epoch: int, identity: str, description: str,
               dest: Path) -> Optional[bytes]:
    """The slot image (ext4 of the root plus /boot/fit.itb) into `dest`; returns the FIT's
    public key device tree when it is signed."""
    initramfs = firmware_initramfs(tree, modules, fw, epoch)
    fit_file = dest.with_suffix(".fit")
    with open(fit_file, "wb") as fh:
        key_dtb = write_fit(initramfs, None, fh, fit, epoch, description)
    root = RootfsTree(dict(merged(tree, modules).entries))  # the image's tree stays as it is
    if root.get("/boot") is None:
        root.mkdir("/boot", mtime=epoch, origin="firmware")
    root.write(FIT_PATH, fit_file.read_bytes(), mtime=epoch, origin="firmware")
    fit_file.unlink()
    # Read-only for its life: no journal, little headroom.
    with open(dest, "wb") as fh:
        write_ext4(root, fh, epoch, identity + "/slot", Ext4Options(headroom="3%", journal=False))
    size = dest.stat().st_size
    if size > fw.slot_size:
        raise UserError(f"{fw.slot_line}: the root needs {size / MIB:.1f} MiB and a slot is "
                        f"{fw.slot_size / MIB:.0f} MiB", hint="raise [firmware] slot_size "
                        "(it is fixed for the device's life: choose with room for updates)")
    return key_dtb


def gpt_script(fw: FirmwareSettings, identity: str, epoch: int) -> str:
    """sfdisk's script: GPT with fixed disk and partition GUIDs, named partitions."""
    def guid(what: str) -> str:
        b = bytearray(derived_number(identity, epoch, what, 16))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex().upper()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    off = fw.offsets()
    sizes = {n: (off[PARTITIONS[i + 1]] if i + 1 < len(PARTITIONS) else off["end"]) - off[n]
             for i, n in enumerate(PARTITIONS)}
    lines = ["label: gpt", f"label-id: {guid('gpt-disk')}", "unit: sectors",
             f"first-lba: {PARTITION_START // SECTOR}", ""]
    for name in PARTITIONS:
        kind = BASIC_DATA if name == "boot" else LINUX_DATA
        attrs = ', attrs="LegacyBIOSBootable"' if name == "boot" else ""
        lines.append(f"start={off[name] // SECTOR}, size={sizes[name] // SECTOR}, type={kind}, "
                     f"uuid={guid('part-' + name)}, name={name}{attrs}")
    return "\n".join(lines) + "\n"


def env_image(text: str, work: Path) -> bytes:
    """Both copies of the environment `text` (mkenvimage -r: CRC, flags byte, variables): the
    first current (flags 1), the second older (0)."""
    src, img = work / "env.txt", work / "env.img"
    src.write_text(text)
    result = subprocess.run([tool("mkenvimage"), "-r", "-p", "0", "-s", str(ENV_SIZE),
                             "-o", str(img), str(src)], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"firmware: mkenvimage failed: {result.stderr.strip()[-300:]}")
    first = bytearray(img.read_bytes())
    first[4] = 1
    second = bytearray(first)
    second[4] = 0
    return bytes(first + second)


def boot_layout(fw: FirmwareSettings, own_fdt: bool) -> BootLayout:
    off = fw.offsets()
    return BootLayout(fw.interface, 0, off["env"] // SECTOR,
                      {"A": PARTITIONS.index("a") + 1, "B": PARTITIONS.index("b") + 1},
                      fw.tries, fw.scratch,
                      fw.fit_addr or f"0x{fw.kernel_load - DATA_POSITION:x}", fw.cmdline,
                      fw.root_prefix, own_fdt)


def write_firmware_disk(slot: Path, fw: FirmwareSettings, arch: str, own_fdt: bool,
                        identity: str, epoch: int, out) -> None:
    """The whole disk into the open file `out`: slot A holds `slot`, B and data are blank."""
    off = fw.offsets()
    with tempfile.TemporaryDirectory(prefix="lxembed-firmware-") as tmp:
        work = Path(tmp)
        fat = work / "boot.fat"
        script = write_script_image(boot_script(boot_layout(fw, own_fdt)), arch, work)
        volume_id = int.from_bytes(derived_number(identity, epoch, "fat-volume-id", 4), "little")
        write_fat(fat, {"boot.scr": script}, BOOT_SIZE, volume_id, epoch)
        disk = work / "disk"
        write_table(disk, off["end"] + MIB, gpt_script(fw, identity, epoch))  # + backup GPT
        env = env_image(initial_env(fw.tries), work)
        pieces = [(off["boot"], fat.read_bytes()), (off["env"], env)]
        copy_sparse(disk, pieces, [(off["a"], slot)], out)


def copy_sparse(disk: Path, pieces: List[tuple], files: List[tuple], out) -> None:
    """`disk` with `pieces` (offset, bytes) and `files` (offset, path) written in, into `out`;
    runs of zeros become holes when `out` can seek (the hash still covers them)."""
    with open(disk, "r+b") as fh:
        for offset, data in pieces:
            fh.seek(offset)
            fh.write(data)
        for offset, path in files:
            fh.seek(offset)
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, MIB)
    size = disk.stat().st_size
    with open(disk, "rb") as fh:
        pos = 0
        while pos < size:
            try:  # only the data: holes are skipped, not read
                data_at = os.lseek(fh.fileno(), pos, os.SEEK_DATA)
            except OSError:
                data_at = size
            if data_at > pos:
                out.skip(data_at - pos)
                pos = data_at
                continue
            hole_at = os.lseek(fh.fileno(), pos, os.SEEK_HOLE)
            fh.seek(pos)
            while pos < hole_at:
                chunk = fh.read(min(4 * MIB, hole_at - pos))
                out.write(chunk)
                pos += len(chunk)
