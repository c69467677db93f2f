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

from ..config import Plan
from ..config.firmware import FIRMWARE_COMMAND
from ..elf.pick import pick_files
from ..sources.apt import PackageSource
from ..sources.unpacked import add_packages
from ..tree import RootfsTree

TOOLS = {"swupdate": ["/usr/bin/swupdate"],
         "libubootenv-tool": ["/usr/bin/fw_printenv", "/usr/bin/fw_setenv"],
         "e2fsprogs": ["/sbin/mke2fs"]}
COMMAND = FIRMWARE_COMMAND
KEYRING = "/etc/lxembed/update.crt"
INFO = "/etc/lxembed/firmware.json"
ENV_CONFIG = "/etc/fw_env.config"

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
if [ -z "$slot" ]; then echo "$me: not booted from a firmware slot" >&2; exit 2; fi
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
	printf 'BOOT_ORDER %s %s\nBOOT_%s_LEFT %s\nlxembed_trial none\nlxembed_rollback %s\n' \
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
	if swupdate -v -i "$2" -k @KEYRING@ -e "stable,$other" > "$log" 2>&1; then
		echo "$me: installed $2 into slot $other: it boots next, on trial (reboot to start it)"
	else
		why=$(grep -E 'ERROR|error' "$log" | tail -n 1 | sed 's/^\[[^]]*\] : //')
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
    full = RootfsTree()
    add_packages(source.fetch(sorted(TOOLS)), full)
    picked = pick_files(full, [p for paths in TOOLS.values() for p in paths], [], plan.arch)
    tools = {p for paths in TOOLS.values() for p in paths}
    for path, entry in picked:
        # A tool replaces busybox's applet link of the same name (mke2fs).
        if path != "/" and (path in tools or tree.get(path) is None):
            tree.add(path, entry)
    kw = {"mtime": plan.epoch, "origin": "firmware"}
    env = fw.partition("env")
    # libubootenv's redundant copies: device, offset, size (firmware_boot.ENV_SIZE each).
    tree.write(ENV_CONFIG, f"{env} 0x0 0x4000\n{env} 0x4000 0x4000\n".encode(), **kw)
    tree.write(KEYRING, (fw.key / f"{fw.key.name}.crt").read_bytes(), **kw)
    info = {"version": fw.version, "board": plan.board.name, "recipe": plan.recipe.name}
    tree.write(INFO, (json.dumps(info, sort_keys=True) + "\n").encode(), **kw)
    script = (SCRIPT.replace("@ENV_CONFIG@", ENV_CONFIG).replace("@TRIES@", str(fw.tries))
              .replace("@INFO@", INFO).replace("@KEYRING@", KEYRING))
    tree.write(COMMAND, script.encode(), mode=0o755, **kw)
    for d in ("/rom", "/overlay", "/var/lock"):
        if tree.get(d) is None:
            tree.mkdir(d, **kw)
