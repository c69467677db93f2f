"""What an A/B firmware image carries for itself: the updater (SWUpdate), U-Boot environment
tools (libubootenv's fw_printenv/fw_setenv, which SWUpdate also uses), e2fsprogs' mke2fs for
the first boot's data partition, the update keyring, /etc/fw_env.config and
/sbin/lxembed-firmware, the device's own command (status, mark-good, install, factory-reset).

The tools are picked with their exact ELF closure from the board suite's packages; the rest is
written here. The Python init runs `lxembed-firmware mark-good` once the device is healthy and
reboots a slot on trial that is not healthy within [firmware] trial_timeout (docs/init.md).
"""

from __future__ import annotations

import json
import shlex

from ..config import Plan
from ..config.firmware import FIRMWARE_COMMAND
from ..elf.pick import pick_files
from ..sources.apt import PackageSource
from ..sources.unpacked import add_packages
from ..suites import empty_root, get_suite
from ..tree import RootfsTree
from ..writers.firmware_ubi import env_devices
from .swupdate import FW_ENV_CONFIG, PACKAGES, device_files, install_command, picks

COMMAND = FIRMWARE_COMMAND
INFO = "/etc/lxembed/firmware.json"
# e2fsprogs' mke2fs: the first boot's data partition gets ext4 with a journal (/usr/sbin in a
# merged-/usr suite's package; /sbin reaches it through the image's link either way).
MKE2FS = "sbin/mke2fs"

SCRIPT = r"""#!/bin/sh
# lxembed-firmware (generated): the device's side of its A/B firmware (docs/firmware.md).
#   status          the running slot, its version and the boot state
#   mark-good       the running slot is good: first in the boot order, its attempts back
#   install BUNDLE  write a signed update into the other slot; it boots next, on trial
#   factory-reset   empty the overlay (/etc changes, container data) at the next boot; reboot
CONF=@ENV_CONFIG@
TRIES=@TRIES@
me=lxembed-firmware
slot=$(sed -n 's/.*lxembed\.slot=\([AB]\).*/\1/p' /proc/cmdline)
if [ -z "$slot" ]; then
	# The init asks every image to mark-good: one booted otherwise (-kernel) has no slot.
	[ "$1" = mark-good ] && exit 0
	echo "$me: not booted from a firmware slot" >&2; exit 2
fi
if [ "$slot" = A ]; then other=B; else other=A; fi
version=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' @INFO@)
get() { fw_printenv -c "$CONF" -n "$1" 2>/dev/null; }
case "$1" in
status)
	echo "slot $slot, version $version"
	fw_printenv -c "$CONF" BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT lxembed_trial lxembed_rollback
	;;
mark-good)
	order=$(get BOOT_ORDER) left=$(get "BOOT_${slot}_LEFT") trial=$(get lxembed_trial)
	if [ "$order" = "$slot $other" ] && [ "$left" = "$TRIES" ] && [ "$trial" = none ]; then
		exit 0  # already so: the environment is not rewritten at every boot
	fi
	rollback=none
	if [ "$trial" = "$other" ]; then
		rollback=$other
		msg="slot $other failed its trial boots: back on slot $slot, version $version"
	elif [ "$trial" = "$slot" ]; then
		msg="the update to version $version in slot $slot is good"
	else
		msg="slot $slot, version $version, marked good"
	fi
	# libubootenv's script: NAME=VALUE lines, written as one change (one copy, one flags step).
	printf 'BOOT_ORDER=%s %s\nBOOT_%s_LEFT=%s\nlxembed_trial=none\nlxembed_rollback=%s\n' \
		"$slot" "$other" "$slot" "$TRIES" "$rollback" > /tmp/.lxembed-good
	if fw_setenv -c "$CONF" -s /tmp/.lxembed-good; then
		echo "$me: $msg" > /dev/console
	else
		echo "$me: cannot write the boot state" > /dev/console; exit 1
	fi
	rm -f /tmp/.lxembed-good
	;;
install)
	if [ ! -f "$2" ]; then echo "$me: install: no bundle file ${2:-given}" >&2; exit 2; fi
	log=/tmp/lxembed-install.log
	if @INSTALL@ > "$log" 2>&1; then
		echo "$me: installed $2 into slot $other: it boots next, on trial (reboot to start it)"
	else
		why=$(sed -n 's/.*\[ERROR\].*ERROR : //p' "$log" | grep -v '^SWUpdate \*failed' | head -n 1)
		echo "$me: refused $2: ${why:-swupdate failed, see $log}; still on slot $slot" >&2
		exit 1
	fi
	;;
factory-reset)
	: > /overlay/factory-reset && sync
	echo "$me: the overlay is emptied at the next boot: rebooting"
	reboot
	;;
*)
	echo "usage: $me status | mark-good | install BUNDLE | factory-reset" >&2; exit 2
	;;
esac
"""


def add_firmware_tools(tree: RootfsTree, plan: Plan, source: PackageSource, fw) -> None:
    """The device side of the firmware format into `tree`; `fw`: its FirmwareSettings."""
    full = empty_root(plan.board.suite, plan.arch)  # merged /usr: the loader's path resolves
    add_packages(source.fetch(sorted(set(PACKAGES) | {"e2fsprogs"})), full)
    usr = "/usr/" if get_suite(plan.board.suite).merged_usr else "/"
    tools = picks(plan.arch) + [usr + MKE2FS]
    for path, entry in pick_files(full, tools, [], plan.arch):
        # A tool replaces busybox's applet link of the same name (mke2fs).
        if path != "/" and (path in tools or tree.get(path) is None):
            tree.add(path, entry)
    kw = {"mtime": plan.epoch, "origin": "firmware"}
    cert = (fw.key / f"{fw.key.name}.crt").read_bytes()
    nand_env = env_devices() if fw.nand else None  # NAND: the env copies are UBI volumes
    for path, data in sorted(device_files(plan.board.name, cert, fw.partition("env"),
                                          nand_env).items()):
        tree.write(path, data, **kw)
    info = {"version": fw.version, "board": plan.board.name, "recipe": plan.recipe.name}
    tree.write(INFO, (json.dumps(info, sort_keys=True) + "\n").encode(), **kw)
    # The bundle and the slot are the script's: double-quoted, so the shell expands them.
    install = " ".join(f'"{a}"' if "$" in a else shlex.quote(a)
                       for a in install_command("$2", "$other"))
    script = (SCRIPT.replace("@ENV_CONFIG@", FW_ENV_CONFIG).replace("@TRIES@", str(fw.tries))
              .replace("@INFO@", INFO).replace("@INSTALL@", install))
    tree.write(COMMAND, script.encode(), mode=0o755, **kw)
    for d in ("/rom", "/overlay", "/var/lock"):
        if tree.get(d) is None:
            tree.mkdir(d, **kw)
