"""The A/B firmware format, for real: U-Boot (u-boot-qemu) boots the disk in qemu, counts the
attempts, SWUpdate installs signed bundles from inside the guest, the init marks a healthy slot
good, and broken updates roll back by themselves.

One qemu process is the device for the whole story (reboots stay in it, the disk is written in
place, as a board's flash): v1 from the factory image; v2 installed from a "USB stick" (a second
disk holding the bundles), kept after a reboot with /etc changes; bundles changed by one byte or
signed by another key refused while v2 runs; then three broken v3s, each falling back to v2 by
itself: an init that never gets healthy, a kernel panic, a userland that hangs (only the
watchdog resets it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import make_key, run_lxembed

from lxembed.config import load_board
from lxembed.runners.accel import choose_accel
from lxembed.runners.qemu_system import QemuSetup, running_guest
from lxembed.runners.uboot import copy_disk, device_run

BOARD = "qemu-arm64"
TRIES = 2
BASE = """base = "busybox-python"
description = "firmware test {version}"
{extra}
[fit]
key = "keys/{key}"

[firmware]
version = "{version}"
key = "keys/{key}"
slot_size = "160MiB"
data_size = "16MiB"
tries = {tries}
trial_timeout = {trial}
"""
# Broken on purpose: each must fall back to v2 without anyone touching the device.
UNHEALTHY = """
[[services]]
name = "app"
command = ["/bin/sleep", "100000"]
health_command = "/bin/false"
health_interval = 1.0
unhealthy_after = 100
"""
# /sbin/init replaced (recipe files are written last): a kernel panic, and a hang with the
# watchdog armed, as a stuck PID 1 would leave it.
PANIC = """
[files]
"/sbin/init" = "#!/bin/sh\\n/bin/mount -t proc proc /proc\\necho c > /proc/sysrq-trigger\\n"
"""
HANG = """modules = ["i6300esb"]
[files]
"/sbin/init" = \"\"\"#!/bin/sh
/bin/mount -t proc proc /proc
/bin/mount -t devtmpfs devtmpfs /dev
/sbin/modprobe i6300esb heartbeat=4
exec 3>/dev/watchdog
echo lxembed-test: hung
while :; do /bin/sleep 1000; done
\"\"\"
"""
VARIANTS = {"v1": ("1.0", "", "dev"), "v2": ("2.0", "", "dev"),
            "v2-other-key": ("2.0", "", "other"), "v3-unhealthy": ("3.0", UNHEALTHY, "dev"),
            "v3-panic": ("3.1", PANIC, "dev"), "v3-hang": ("3.2", HANG, "dev")}


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("firmware")
    make_key(tmp / "keys" / "dev")
    make_key(tmp / "keys" / "other")
    out = {}
    for name, (version, extra, key) in VARIANTS.items():
        recipe = tmp / f"{name}.toml"
        recipe.write_text(BASE.format(version=version, extra=extra, key=key, tries=TRIES,
                                      trial=15 if name == "v3-unhealthy" else 120))
        run_lxembed("build", "-b", BOARD, "-r", str(recipe), "-o", str(tmp / name),
                    "--format", "firmware", check=True)
        out[name] = tmp / name
    return out


def stick(firmware, dest: Path) -> Path:
    """An ext4 "USB stick" holding the bundles, one changed by one byte."""
    files = dest / "stick"
    files.mkdir()
    for name in ("v2", "v2-other-key", "v3-unhealthy", "v3-panic", "v3-hang"):
        shutil.copy(firmware[name] / "rootfs.swu", files / f"{name}.swu")
    tampered = bytearray((files / "v2.swu").read_bytes())
    tampered[len(tampered) // 2] ^= 0x01  # inside the image's compressed data
    (files / "tampered.swu").write_bytes(tampered)
    image = dest / "stick.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(files), str(image), "300M"],
                   check=True)
    return image


def test_two_builds_are_identical_and_the_layout_is_what_sfdisk_reads(firmware, tmp_path):
    run_lxembed("build", "-b", BOARD, "-r", str(firmware["v1"].parent / "v1.toml"),
                "-o", str(tmp_path / "again"), "--format", "firmware", check=True)
    for name in ("rootfs.firmware", "rootfs.swu"):
        assert (tmp_path / "again" / name).read_bytes() == (firmware["v1"] / name).read_bytes()
    table = json.loads(subprocess.run(["sfdisk", "-J", str(firmware["v1"] / "rootfs.firmware")],
                                      capture_output=True, text=True, check=True).stdout)
    parts = table["partitiontable"]["partitions"]
    assert table["partitiontable"]["label"] == "gpt"
    assert [p["name"] for p in parts] == ["boot", "env", "a", "b", "data"]
    assert parts[2]["size"] == parts[3]["size"] == 160 * 2048


def test_the_updater_checks_the_bundle_with_the_image_keyring(firmware, tmp_path):
    """swupdate's own check (-c) on the host: the image's keyring accepts its bundle, another
    key's does not."""
    if shutil.which("swupdate") is None:
        pytest.skip("swupdate is not installed")
    keys = firmware["v1"].parent / "keys"
    for cert, ok in ((keys / "dev" / "dev.crt", True), (keys / "other" / "other.crt", False)):
        # Each swupdate alone in its namespaces: two at once on a machine can hang (docs).
        result = subprocess.run(["unshare", "--net", "--pid", "--fork", "--kill-child",
                                 "swupdate", "-c", "-i", str(firmware["v2"] / "rootfs.swu"),
                                 "-k", str(cert), "-e", "stable,B", "-H", f"{BOARD}:1.0"],
                                capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, TMPDIR=str(tmp_path)))
        assert (result.returncode == 0) == ok, result.stdout[-2000:] + result.stderr[-2000:]


class Device:
    """The console of the qemu process that is the device, with the story's timings."""

    def __init__(self, console, log: Path):
        self.console, self.log, self.t0 = console, log, time.monotonic()
        self.times = {}

    def until(self, pattern: str, timeout: float) -> str:
        match = self.console.expect(re.compile(r"(?s)(.*?)" + pattern), timeout)
        return match.group(1)

    def healthy(self, timeout: float = 120) -> str:
        before = self.until(r"lxembed-init: healthy", timeout)
        self.console.sync(20)
        return before

    def run(self, command: str, timeout: float = 60) -> str:
        status, output = self.console.run(command, timeout)
        assert status == 0, f"{command}: {status}\n{output}"
        return output

    def fails(self, command: str, timeout: float = 120) -> str:
        status, output = self.console.run(command, timeout)
        assert status not in (0, None), f"{command}: {status}\n{output}"
        return output

    def state(self) -> dict:
        text = self.run("lxembed-firmware status")
        state = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        state["slot"], state["version"] = re.match(r"slot (\w), version (\S+)", text).groups()
        return state

    def install_and_reboot(self, bundle: str) -> None:
        start = time.monotonic()
        out = self.run(f"lxembed-firmware install /mnt/{bundle}.swu", 180)
        self.times[f"install {bundle}"] = time.monotonic() - start
        assert "into slot" in out
        self.console.send("umount /mnt; reboot\n")


@pytest.mark.slow
def test_update_rollback_story(firmware, tmp_path):
    board = load_board(BOARD)
    setup = QemuSetup.for_board(board)
    disk = copy_disk(firmware["v1"] / "rootfs.firmware", tmp_path / "device.img")
    image = stick(firmware, tmp_path)
    log = tmp_path / "console.log"
    with device_run(board, setup, choose_accel(board.arch), disk,
                    firmware["v1"] / "rootfs.fit.key.dtb") as argv:
        argv += ["-drive", f"file={image},format=raw,if=none,id=stick,snapshot=on",
                 "-device", "virtio-blk-pci,drive=stick"]
        with running_guest(argv, open(log, "wb")) as (_, console):
            dev = Device(console, log)
            try:
                story(dev)
            finally:
                print("timings:", {k: round(v, 1) for k, v in dev.times.items()})


def story(dev: Device) -> None:
    # v1, from the factory: the first boot formats the data partition; healthy: marked good.
    before = dev.healthy()
    assert "formatting the data partition" in before
    assert "lxembed-boot: slot A" in before
    dev.until(r"lxembed-firmware: slot A, version 1.0, marked good", 20)
    state = dev.state()
    assert (state["slot"], state["version"], state["BOOT_A_LEFT"]) == ("A", "1.0", str(TRIES))
    assert "/dev/vda5 on /overlay type ext4" in dev.run("mount")
    dev.run("echo kept > /etc/lxembed-test && mkdir -p /var/lib/lxc/app && echo data > "
            "/var/lib/lxc/app/state && mount -o ro /dev/vdb /mnt")
    dev.install_and_reboot("v2")

    # v2 on trial in slot B, healthy: good; what was written under v1 is still there.
    before = dev.healthy()
    assert "lxembed-boot: slot B" in before and "lxembed.trial" not in before
    dev.until(r"lxembed-firmware: the update to version 2.0 in slot B is good", 20)
    state = dev.state()
    assert (state["slot"], state["version"], state["BOOT_ORDER"]) == ("B", "2.0", "B A")
    assert state["lxembed_trial"] == "none" and state["BOOT_B_LEFT"] == str(TRIES)
    assert dev.run("cat /etc/lxembed-test /var/lib/lxc/app/state") == "kept\ndata"

    # Refused with one line each; the device stays on v2 and its boot state is untouched.
    dev.run("mount -o ro /dev/vdb /mnt")
    for bundle in ("tampered", "v2-other-key"):
        out = dev.fails(f"lxembed-firmware install /mnt/{bundle}.swu")
        lines = [line for line in out.splitlines() if line.startswith("lxembed-firmware:")]
        assert len(lines) == 1 and "refused" in lines[0] and "still on slot B" in lines[0], out
    assert dev.state() == state

    # Three broken updates; each time U-Boot gives A TRIES attempts, then boots v2 again.
    for bundle, sign in (("v3-unhealthy", r"not healthy in time on trial: rebooting"),
                         ("v3-panic", r"Kernel panic"),
                         ("v3-hang", r"lxembed-test: hung")):
        start = time.monotonic()
        dev.install_and_reboot(bundle)
        for _ in range(TRIES):
            dev.until(r"lxembed-boot: slot A", 120)
            dev.until(sign, 120)
        before = dev.healthy(180)
        assert "lxembed-boot: slot B" in before
        dev.until(r"lxembed-firmware: slot A failed its trial boots: back on slot B, "
                  r"version 2.0", 20)
        dev.times[f"{bundle} to v2 again"] = time.monotonic() - start
        state = dev.state()
        assert (state["slot"], state["version"], state["lxembed_rollback"]) == ("B", "2.0", "A")
        assert state["BOOT_ORDER"] == "B A" and state["BOOT_A_LEFT"] == "0"
        assert dev.run("cat /etc/lxembed-test") == "kept"
        dev.run("mount -o ro /dev/vdb /mnt")

    # Factory reset: the overlay is emptied, the slot and its boot state stay.
    dev.console.send("lxembed-firmware factory-reset\n")
    before = dev.healthy()
    assert "factory reset: emptying the overlay" in before
    assert dev.fails("cat /etc/lxembed-test /var/lib/lxc/app/state")
    state = dev.state()
    assert (state["slot"], state["version"], state["BOOT_ORDER"]) == ("B", "2.0", "B A")


@pytest.mark.slow
def test_power_cut_during_an_install_and_a_first_boot(firmware, tmp_path):
    """qemu killed (the power cut) while swupdate writes slot B, then again while the new slot
    boots for the first time: each time the device comes back on a slot, its overlay whole."""
    board = load_board(BOARD)
    setup = QemuSetup.for_board(board)
    disk = copy_disk(firmware["v1"] / "rootfs.firmware", tmp_path / "device.img")
    image = stick(firmware, tmp_path)
    accel = choose_accel(board.arch)

    def boot(_log: str):
        return device_run(board, setup, accel, disk, firmware["v1"] / "rootfs.fit.key.dtb")

    def power_on(argv, log):
        return running_guest(argv + ["-drive", f"file={image},format=raw,if=none,id=stick,"
                                     "snapshot=on", "-device", "virtio-blk-pci,drive=stick"],
                             open(tmp_path / log, "wb"))

    with boot("1") as argv, power_on(argv, "1.log") as (proc, console):
        dev = Device(console, tmp_path / "1.log")
        dev.healthy()
        dev.until(r"marked good", 20)
        dev.run("echo kept > /etc/lxembed-test && sync && mount -o ro /dev/vdb /mnt")
        console.send("lxembed-firmware install /mnt/v2.swu\n")
        time.sleep(3)  # swupdate is streaming the image into slot B (about 8 s in all)
        proc.kill()
    with boot("2") as argv, power_on(argv, "2.log") as (proc, console):
        dev = Device(console, tmp_path / "2.log")
        before = dev.healthy()
        assert "lxembed-boot: slot A" in before
        state = dev.state()
        assert (state["slot"], state["BOOT_ORDER"], state["lxembed_trial"]) == ("A", "A B",
                                                                                "none")
        assert dev.run("cat /etc/lxembed-test") == "kept"
        dev.run("mount -o ro /dev/vdb /mnt")
        dev.install_and_reboot("v2")
        dev.until(r"lxembed-boot: slot B", 60)
        dev.until(r"Starting kernel", 30)
        time.sleep(1)  # the kernel of the new slot is booting
        proc.kill()
    with boot("3") as argv, power_on(argv, "3.log") as (proc, console):
        dev = Device(console, tmp_path / "3.log")
        before = dev.healthy()
        assert "lxembed-boot: slot B (partition 4), 0 attempts left" in before
        dev.until(r"the update to version 2.0 in slot B is good", 20)
        assert dev.run("cat /etc/lxembed-test") == "kept"


@pytest.mark.slow
def test_the_firmware_of_a_trixie_board_boots_and_marks_itself_good(firmware, tmp_path):
    """The same recipe on trixie (merged /usr, its swupdate and e2fsprogs): two builds the same
    bytes, booted through U-Boot with its checks."""
    recipe = firmware["v1"].parent / "v1.toml"
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run_lxembed("build", "-b", "qemu-arm64-trixie", "-r", str(recipe), "-o", str(out),
                    "--format", "firmware", check=True)
    for name in ("rootfs.firmware", "rootfs.swu"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    result = run_lxembed("test", "-b", "qemu-arm64-trixie", "-r", str(recipe), "--root",
                         "firmware", "--image", str(outs[0] / "rootfs.firmware"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "firmware-marked-good" in result.stdout + result.stderr
