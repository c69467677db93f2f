"""The firmware initramfs's /init: the slot read-only at /rom, the data partition at /overlay
holding the overlay's upper layer (OpenWrt's names), the two merged as the new root.

Rules it keeps, for a device nobody can reach:
- a slot that does not mount is a failed boot: the kernel panics (panic= reboots it) and U-Boot
  has already counted the attempt;
- data that does not mount never stops the boot: a blank partition (the first boot, or one
  erased) is formatted; one that has a filesystem that will not mount is left as it is (it may
  be saved by hand) and the device runs on a RAM overlay, saying so;
- factory reset (`lxembed.factory_reset` on the kernel command line, or /overlay/factory-reset
  left by `lxembed-firmware factory-reset`) empties the overlay before it is used.
"""

INIT = """\
#!/bin/busybox sh
# lxembed firmware boot (generated): slot -> /rom, data -> /overlay, overlay -> /.
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
data={data}
while read -r module; do
	$b modprobe "$module" 2>/dev/null || say "cannot load $module"
done < /etc/modules-boot
n=0
while {{ [ ! -b "$root" ] || [ ! -b "$data" ]; }} && [ $n -lt 200 ]; do
	$b usleep 50000; n=$((n + 1))
done
$b mkdir -p /rom /overlay /newroot
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
    return INIT.format(data=data_partition)
