"""The firmware initramfs's /init: the slot read-only at /rom, the data partition (or, on NAND,
the data volume) at /overlay holding the overlay's upper layer (OpenWrt's names), the two
merged as the new root. The disk and the NAND /init differ only in how they reach the slot and
the data; the start and the overlay are one text.

Rules it keeps, for a device nobody can reach:
- a slot that does not mount is a failed boot: the kernel panics (panic= reboots it) and U-Boot
  has already counted the attempt;
- data that does not mount never stops the boot: a blank partition (the first boot, or one
  erased) is formatted; one that has a filesystem that will not mount is left as it is (it may
  be saved by hand) and the device runs on a RAM overlay, saying so;
- factory reset (`lxembed.factory_reset` on the kernel command line, or /overlay/factory-reset
  left by `lxembed-firmware factory-reset`) empties the overlay before it is used.
"""

# The kernel command line, the filesystems the init needs, the boot modules.
_START = """\
#!/bin/busybox sh
# lxembed firmware boot (generated): {what}
b=/bin/busybox
$b mount -t proc proc /proc
$b mount -t sysfs sysfs /sys
$b mount -t devtmpfs devtmpfs /dev
say() {{ echo "lxembed-firmware: $*" > /dev/console; }}
root= init=/sbin/init reset=
for arg in $($b cat /proc/cmdline); do
	case "$arg" in
	root=*) root=${{arg#root=}} ;;
	init=*) init=${{arg#init=}} ;;
	lxembed.factory_reset) reset=1 ;;
	esac
done
while read -r module; do
	$b modprobe "$module" 2>/dev/null || say "cannot load $module"
done < /etc/modules-boot
$b mkdir -p /rom /overlay /newroot
"""

# A disk: the slot's ext4, the data partition's ext4 (a blank one formatted).
_DISK = """\
data={data}
n=0
while {{ [ ! -b "$root" ] || [ ! -b "$data" ]; }} && [ $n -lt 200 ]; do
	$b usleep 50000; n=$((n + 1))
done
# noload: a read-only slot's journal is never replayed, so its bytes stay what was installed.
if ! $b mount -t ext4 -o ro,noload "$root" /rom; then
	say "slot $root does not mount: this boot failed"
	exit 1
fi
blank() {{ [ "$($b dd if="$1" bs=512 count=4 2>/dev/null | $b tr -d '\\000' | $b wc -c)" = 0 ]; }}
mounted=
if $b mount -t ext4 -o noatime "$data" /overlay 2>/dev/null; then
	mounted=1
elif blank "$data"; then
	say "formatting the data partition $data (first boot)"
	# e2fsprogs' mke2fs from the slot when it has one (ext4 with a journal), else busybox's.
	$b mount -t devtmpfs devtmpfs /rom/dev 2>/dev/null
	$b chroot /rom /sbin/mke2fs -q -F -t ext4 -L data "$data" 2>/dev/null ||
		$b mke2fs -F -L data "$data" >/dev/null
	$b umount /rom/dev 2>/dev/null
	$b mount -t ext4 -o noatime "$data" /overlay && mounted=1
fi
if [ -z "$mounted" ]; then
	say "the data partition $data does not mount: changes are kept in RAM until reboot"
	$b mount -t tmpfs -o mode=0755 tmpfs /overlay
fi
"""

# NAND: UBI takes ubi.mtd= and ubi.block= from the kernel command line (built in, from the
# kernel; as a module, from busybox's modprobe, which adds a module's options found there).
_NAND = """\
n=0
while [ ! -b "$root" ] && [ $n -lt 200 ]; do $b usleep 50000; n=$((n + 1)); done
if ! $b mount -t squashfs -o ro "$root" /rom; then
	say "slot $root does not mount: this boot failed"
	exit 1
fi
# UBIFS formats an empty volume at its first mount: the first boot needs no mkfs.
if ! $b mount -t ubifs -o noatime ubi{ubi}:data /overlay; then
	say "the data volume does not mount: changes are kept in RAM until reboot"
	$b mount -t tmpfs -o mode=0755 tmpfs /overlay
fi
"""

# Factory reset, the overlay (emptied if it does not mount), switch_root.
_OVERLAY = """\
if [ -n "$reset" ] || [ -e /overlay/factory-reset ]; then
	say "factory reset: emptying the overlay"
	$b rm -rf /overlay/upper /overlay/work
	$b rm -f /overlay/factory-reset
	$b sync
fi
$b mkdir -p /overlay/upper /overlay/work
if ! $b mount -t overlay -o lowerdir=/rom,upperdir=/overlay/upper,workdir=/overlay/work \\
		overlay /newroot; then
	say "the overlay does not mount: emptying it"
	$b rm -rf /overlay/upper /overlay/work
	$b mkdir -p /overlay/upper /overlay/work
	$b mount -t overlay -o lowerdir=/rom,upperdir=/overlay/upper,workdir=/overlay/work \\
		overlay /newroot || exit 1
fi
$b mkdir -p /newroot/rom /newroot/overlay
$b mount --move /rom /newroot/rom
$b mount --move /overlay /newroot/overlay
$b umount /sys /proc
$b umount /dev
exec $b switch_root /newroot "$init"
"""


def firmware_init_script(data_partition: str) -> str:
    """The disk's /init: the slot's ext4 and the data partition `data_partition`."""
    return (_START.format(what="slot -> /rom, data -> /overlay, overlay -> /.")
            + _DISK.format(data=data_partition) + _OVERLAY)


def nand_init_script(ubi_device: int) -> str:
    """The NAND /init: the slot's squashfs through ubiblock, the UBIFS data volume."""
    return (_START.format(what="UBI attached, the slot's squashfs (ubiblock) -> /rom, the data "
                          "volume (UBIFS) -> /overlay, overlay -> /.")
            + _NAND.format(ubi=ubi_device) + _OVERLAY)
