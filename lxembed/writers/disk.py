"""`disk.ext4` and `disk.squashfs`: a partitioned disk image for a qemu board, rootless.

The root filesystem (the tree plus the board kernel's modules) is written by the ext4 or
squashfs writer into a file; sfdisk writes an MBR partition table into another file (no loop
device, no root) and the filesystem is copied in at the partition's offset. Beside the disk
goes its boot initramfs (DISK.initrd): static busybox from the tree, the storage modules and
an /init that loads them, mounts the root partition and switch_roots to the image's init.
A squashfs root is mounted under a tmpfs overlay, as routers do, so the image's init can write.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..elf.identify import identify, is_elf
from ..elf.pick import pick_files
from ..errors import UserError
from ..tree import CHAR, DIR, Entry, RootfsTree
from .cpio import write_cpio
from .ext4 import Ext4Options, write_ext4
from .flash import derived_number
from .squashfs import SquashfsOptions, write_squashfs

DISK_FORMATS = ("disk.ext4", "disk.squashfs", "sdcard")
# What the boot initramfs loads to reach the root: the virtio disk and the filesystem
# (virtio core, jbd2 and crc16 come as dependencies; ext4 asks for crc32c only as a softdep
# by alias, so crc32c_generic is named).
STORAGE_MODULES = {"ext4": ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4"),
                   "squashfs": ("virtio_pci", "virtio_blk", "squashfs", "overlay")}
PARTITION_START = 1 << 20  # 1 MiB: the usual alignment, room for a boot loader
SECTOR = 512

INIT = """\
#!/bin/busybox sh
# lxembed disk boot: load the storage modules, mount the root partition, switch_root.
# root=, rootfstype= and init= on the kernel command line override the defaults below.
b=/bin/busybox
$b mount -t proc proc /proc
$b mount -t sysfs sysfs /sys
$b mount -t devtmpfs devtmpfs /dev
root={root} fstype={fstype} init=/sbin/init
for arg in $($b cat /proc/cmdline); do
	case "$arg" in
	root=*) root=${{arg#root=}} ;;
	rootfstype=*) fstype=${{arg#rootfstype=}} ;;
	init=*) init=${{arg#init=}} ;;
	esac
done
while read -r module; do
	$b modprobe "$module" || echo "lxembed-initramfs: cannot load $module"
done < /etc/modules-boot
n=0
while [ ! -b "$root" ] && [ $n -lt 100 ]; do $b usleep 50000; n=$((n + 1)); done
fail() {{ echo "lxembed-initramfs: $*"; exec $b sh; }}
if [ "$fstype" = squashfs ]; then
	# Read-only root under a tmpfs overlay: the running system can write, the image stays.
	$b mkdir -p /ro /rw
	$b mount -t squashfs -o ro "$root" /ro || fail "cannot mount $root ($fstype)"
	$b mount -t tmpfs -o mode=0755 tmpfs /rw
	$b mkdir -p /rw/upper /rw/work
	$b mount -t overlay -o lowerdir=/ro,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \\
		|| fail "cannot mount the overlay"
else
	$b mount -t "$fstype" "$root" /newroot || fail "cannot mount $root ($fstype)"
fi
$b umount /sys /proc
$b umount /dev
exec $b switch_root /newroot "$init"
"""


@dataclass
class BootInputs:
    """What a bootable format needs besides the tree; the pipeline gathers it (writers never
    download)."""

    modules: Optional[RootfsTree] = None  # the kernel's modules: root partition and initramfs
    files: Dict[str, bytes] = field(default_factory=dict)  # a boot partition's firmware, kernel
    fit: Optional[object] = None  # the fit format's kernel, device tree and key (FitInputs)
    firmware: Optional[object] = None  # the firmware format's settings (FirmwareSettings)


def merged(tree: RootfsTree, modules: Optional[RootfsTree]) -> RootfsTree:
    """The root partition's tree: the image and its kernel's modules, like booting the two
    initramfs segments in order."""
    if modules is None:
        return tree
    root = RootfsTree(dict(tree.entries))
    for path, entry in modules:
        if not (entry.type == DIR and path in root.entries):
            root.add(path, entry)
    return root


def boot_initramfs(tree: RootfsTree, modules: Optional[RootfsTree], fstype: str,
                   root_device: str, epoch: int,
                   storage: Optional[Sequence[str]] = None) -> RootfsTree:
    """The initramfs that mounts the root partition: busybox (with its libraries when it is
    the dynamic one), storage modules, /init."""
    busybox = tree.read("/bin/busybox")
    if busybox is None:
        raise UserError("disk: the image has no /bin/busybox for the disk's boot initramfs",
                        hint="add busybox-static to the recipe's packages")
    boot = RootfsTree()
    kw = {"mtime": epoch, "origin": "disk boot"}
    for d in ("/dev", "/proc", "/sys", "/newroot", "/etc"):
        boot.mkdir(d, **kw)
    boot.add("/dev/console", Entry(CHAR, 0o600, major=5, minor=1, **kw))
    try:
        info = identify(busybox, "/bin/busybox") if is_elf(busybox[:4]) else None
    except UserError:  # not one the loader could run: copied as it is, like a static one
        info = None
    arches = info.matching_arches() if info else []
    if info and info.interp and arches:  # a dynamic busybox brings its loader and libraries
        for path, entry in pick_files(tree, ["/bin/busybox"], [], arches[0]):
            if path != "/" and boot.get(path) is None:
                boot.add(path, entry)
    else:
        boot.write("/bin/busybox", busybox, mode=0o755, **kw)
    boot.symlink("/bin/sh", "busybox", **kw)
    boot.write("/init", INIT.format(root=root_device, fstype=fstype).encode(), mode=0o755, **kw)
    names = STORAGE_MODULES[fstype] if storage is None else storage
    if modules is not None:
        for path, entry in modules:  # a merged-/usr suite's are under /usr/lib/modules
            if path.startswith(("/lib/", "/usr/lib/modules/")):
                boot.add(path.replace("/usr/lib/", "/lib/", 1), entry)
    boot.write("/etc/modules-boot", "".join(f"{m}\n" for m in names).encode(), **kw)
    return boot


def partition_table(fs_bytes: int, identity: str, epoch: int) -> str:
    """sfdisk's script: an MBR, one Linux partition at 1 MiB, a disk id fixed per image."""
    label_id = int.from_bytes(derived_number(identity, epoch, "mbr-disk-id", 4), "little")
    return (f"label: dos\nlabel-id: 0x{label_id:08x}\nunit: sectors\n\n"
            f"start={PARTITION_START // SECTOR}, size={fs_bytes // SECTOR}, type=83\n")


def write_partitioned(disk: Path, partitions: List[tuple], script: str) -> None:
    """Make `disk` with sfdisk from `script`, then copy each (offset, file) into it."""
    end = max(offset + path.stat().st_size for offset, path in partitions)
    write_table(disk, -(-end // (1 << 20)) * (1 << 20), script)
    with open(disk, "r+b") as fh:
        for offset, path in partitions:
            fh.seek(offset)
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)


def write_table(disk: Path, size: int, script: str) -> None:
    """A `size`-byte file (sparse) with sfdisk's table from `script` written in: no loop
    device, no root."""
    with open(disk, "wb") as fh:
        fh.truncate(size)
    if shutil.which("sfdisk") is None:
        raise UserError("disk: sfdisk is not installed", hint="apt-get install fdisk")
    result = subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)],
                            input=script, capture_output=True, text=True,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    if result.returncode != 0:
        raise UserError(f"disk: sfdisk failed: {result.stderr.strip()[-400:]}")


def write_disk(tree: RootfsTree, out, fstype: str, identity: str, epoch: int,
               modules: Optional[RootfsTree] = None, ext4: Optional[Ext4Options] = None,
               squashfs: Optional[SquashfsOptions] = None) -> None:
    """The disk image (MBR + root partition) into the open file `out`."""
    root = merged(tree, modules)
    with tempfile.TemporaryDirectory(prefix="lxembed-disk-") as tmp:
        fs, disk = Path(tmp, "root.fs"), Path(tmp, "disk")
        with open(fs, "wb") as fh:
            if fstype == "ext4":
                write_ext4(root, fh, epoch, identity + "/root", ext4)
            else:
                write_squashfs(root, fh, epoch, squashfs)
            fh.truncate(-(-fh.tell() // SECTOR) * SECTOR)  # whole sectors for the partition
        write_partitioned(disk, [(PARTITION_START, fs)],
                          partition_table(fs.stat().st_size, identity, epoch))
        with open(disk, "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)


def write_boot_initramfs(tree: RootfsTree, out, fstype: str, epoch: int,
                         modules: Optional[RootfsTree] = None) -> None:
    boot = boot_initramfs(tree, modules, fstype, "/dev/vda1", epoch)
    write_cpio(boot, out)

