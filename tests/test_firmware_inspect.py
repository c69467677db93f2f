"""`lxembed inspect` on what the firmware format writes: the disk (partitions, the boot state,
the slots' versions and FITs), the SWUpdate bundle and a bare FIT; damaged ones said so.

One firmware build (busybox-python, as the update story's v1); every case works on a sparse
copy of its disk changed with real tools (dd, debugfs, libubootenv's fw_setenv). No boots."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FIRMWARE_RECIPE, make_key, run_lxembed

BOARD = "qemu-arm64"
RECIPE = FIRMWARE_RECIPE
MIB = 1 << 20
ENV_COPY = 0x4000

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin")
            for t in ("sfdisk", "debugfs", "dumpimage", "fw_setenv")),
    reason="needs fdisk, e2fsprogs, u-boot-tools and libubootenv-tool")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fw-inspect")
    make_key(tmp / "keys" / "dev")
    (tmp / "v1.toml").write_text(RECIPE)
    run_lxembed("build", "-b", BOARD, "-r", str(tmp / "v1.toml"), "-o", str(tmp / "out"),
                "--format", "firmware", check=True)
    return tmp / "out"


def inspect(path: Path, *extra: str):
    result = run_lxembed("inspect", str(path), *extra)
    return result.returncode, result.stdout, result.stderr


def inspect_json(path: Path) -> dict:
    code, out, err = inspect(path, "--json")
    assert code in (0, 1), err
    report = json.loads(out)
    assert (code == 1) == bool(report["problems"])
    return report


def partitions(disk: Path) -> dict:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    return {p["name"]: (p["start"] * 512, p["size"] * 512) for p in table["partitions"]}


def device_copy(built: Path, tmp_path: Path) -> Path:
    disk = tmp_path / "device.img"
    subprocess.run(["cp", "--sparse=always", str(built / "rootfs.firmware"), str(disk)],
                   check=True)
    return disk


def fw_env_config(disk: Path, tmp_path: Path) -> Path:
    """libubootenv's /etc/fw_env.config for the disk file: the two copies in its env
    partition, as the device's has them for /dev/vda2."""
    env = partitions(disk)["env"][0]
    conf = tmp_path / "fw_env.config"
    conf.write_text(f"{disk} 0x{env:x} 0x{ENV_COPY:x}\n{disk} 0x{env + ENV_COPY:x} "
                    f"0x{ENV_COPY:x}\n")
    return conf


def dd(src: Path, dest: Path, seek: int = 0, skip: int = 0, count: int = 0) -> None:
    argv = ["dd", f"if={src}", f"of={dest}", "bs=1M", "conv=notrunc,sparse", "status=none",
            f"seek={seek // MIB}", f"skip={skip // MIB}"]
    subprocess.run(argv + ([f"count={count // MIB}"] if count else []), check=True)


@needs_tools
def test_factory_image(built):
    start = time.monotonic()
    code, text, err = inspect(built / "rootfs.firmware")
    seconds = time.monotonic() - start
    print(f"inspect of the firmware image: {seconds:.2f} s")
    assert code == 0, err
    assert "PROBLEM" not in text
    assert "boot state: copy 1 is current" in text and "next boot: slot A" in text
    assert "slot A (partition 3): version 1.0 (qemu-arm64/v1)" in text
    assert "slot B (partition 4): blank" in text
    r = inspect_json(built / "rootfs.firmware")
    assert [p["name"] for p in r["partitions"]] == ["boot", "env", "a", "b", "data"]
    assert r["partitions"][2]["bytes"] == 160 * MIB
    assert r["boot"]["filesystem"] == "fat" and r["data"]["filesystem"] == "blank"
    env = r["env"]
    assert env["current"] == 1 and env["damaged"] == []
    assert [c["flags"] for c in env["copies"]] == [1, 0]
    assert env["vars"] == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "2", "BOOT_B_LEFT": "0",
                           "lxembed_trial": "none", "lxembed_rollback": "none"}
    a, b = r["slots"]["A"], r["slots"]["B"]
    assert (a["version"], a["board"], a["recipe"]) == ("1.0", BOARD, "v1")
    assert b == {"partition": 4, "filesystem": "blank"}
    # The FIT's listing is dumpimage's, and every image's sha256 was checked.
    fit = a["fit"]
    assert [(i["name"], i["hash_algo"], i["hash_ok"]) for i in fit["images"]] == [
        ("kernel", "sha256", True), ("ramdisk", "sha256", True)]
    assert fit["signed"] and fit["configurations"][0]["sign_algo"] == "sha256,rsa2048:dev"
    assert seconds < 5


@needs_tools
def test_a_damaged_env_copy_is_named_and_the_other_is_current(built, tmp_path):
    disk = device_copy(built, tmp_path)
    env = partitions(disk)["env"][0]
    with open(disk, "r+b") as fh:  # one byte in copy 2's variables
        fh.seek(env + ENV_COPY + 10)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x20]))
    code, text, err = inspect(disk)
    assert code == 0, err  # the redundant copy did its job: the device boots as before
    assert "copy 2 flags 0 DAMAGED (CRC mismatch)" in text and "copy 1 is current" in text
    r = inspect_json(disk)
    assert (r["env"]["current"], r["env"]["damaged"]) == (1, [2])
    assert r["env"]["vars"]["BOOT_ORDER"] == "A B"
    # libubootenv, which the device writes the state with, agrees: it reads copy 1.
    out = subprocess.run(["fw_printenv", "-c", str(fw_env_config(disk, tmp_path)),
                          "BOOT_ORDER"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "BOOT_ORDER=A B"
    # Copy 1 damaged too: no state left, said as a problem (exit 1).
    with open(disk, "r+b") as fh:
        fh.seek(env + 10)
        fh.write(b"\xff")
    code, text, _ = inspect(disk)
    assert code == 1 and "PROBLEM: both boot state copies are damaged" in text


@needs_tools
def test_a_v2_written_into_slot_b(built, tmp_path):
    """What an update leaves: slot B written (dd of a slot image whose firmware.json says
    2.0), the state switched by fw_setenv into the older copy, as swupdate does it."""
    disk = device_copy(built, tmp_path)
    parts = partitions(disk)
    slot = tmp_path / "slot.ext4"
    dd(disk, slot, skip=parts["a"][0], count=parts["a"][1])
    info = tmp_path / "firmware.json"
    info.write_text(json.dumps({"board": BOARD, "recipe": "v2", "version": "2.0"}) + "\n")
    subprocess.run(["debugfs", "-w", "-R", "rm /etc/lxembed/firmware.json", str(slot)],
                   check=True, capture_output=True)
    subprocess.run(["debugfs", "-w", "-R", f"write {info} /etc/lxembed/firmware.json",
                    str(slot)], check=True, capture_output=True)
    dd(slot, disk, seek=parts["b"][0])
    script = tmp_path / "state"
    script.write_text("BOOT_ORDER=B A\nBOOT_B_LEFT=2\nlxembed_trial=B\n")
    subprocess.run(["fw_setenv", "-c", str(fw_env_config(disk, tmp_path)), "-s", str(script)],
                   check=True)
    code, text, err = inspect(disk)
    assert code == 0, err
    assert "slot B (partition 4): version 2.0 (qemu-arm64/v2)" in text
    assert "boot state: copy 2 is current" in text and "next boot: slot B" in text
    r = inspect_json(disk)
    assert r["env"]["copies"][1]["flags"] == 2
    assert r["env"]["vars"]["lxembed_trial"] == "B"
    assert r["slots"]["B"]["fit"]["hashes_ok"] and r["slots"]["A"]["version"] == "1.0"
    # The slot's FIT changed by one byte inside its kernel: U-Boot would refuse it.
    fit = tmp_path / "fit.itb"
    subprocess.run(["debugfs", "-R", f"dump /boot/fit.itb {fit}", f"{disk}?offset="
                    f"{parts['b'][0]}"], check=True, capture_output=True)
    data = bytearray(fit.read_bytes())
    data[len(data) // 2] ^= 1
    fit.write_bytes(data)
    code, text, _ = inspect(fit)
    assert code == 1 and "MISMATCH" in text and "PROBLEM:" in text


@needs_tools
def test_bundle(built, tmp_path):
    code, text, err = inspect(built / "rootfs.swu")
    assert code == 0, err
    assert "version 1.0, board qemu-arm64" in text
    assert "signature: matches sw-description, by CN=dev" in text
    r = inspect_json(built / "rootfs.swu")
    assert [s["selection"] for s in r["selections"]] == ["stable,A", "stable,B"]
    assert [s["device"] for s in r["selections"]] == ["/dev/vda3", "/dev/vda4"]
    assert r["selections"][1]["bootenv"] == {"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2",
                                             "lxembed_trial": "B"}
    image = r["images"][0]
    assert image["name"] == "rootfs.ext4.zst" and image["matches"]
    assert image["sha256"] == r["selections"][0]["sha256"]
    tampered = tmp_path / "tampered.swu"
    data = bytearray((built / "rootfs.swu").read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(data)
    code, text, _ = inspect(tampered)
    assert code == 1 and "NOT the pinned sha256" in text
    cut = tmp_path / "cut.swu"
    cut.write_bytes(data[:len(data) // 3])
    code, out, err = inspect(cut)
    assert (code, out) == (2, "") and err.startswith(f"lxembed: error: {cut}: a damaged "
                                                     "SWUpdate bundle (cut short")


@needs_tools
def test_bare_fit(built, tmp_path):
    disk = built / "rootfs.firmware"
    fit = tmp_path / "fit.itb"
    subprocess.run(["debugfs", "-R", f"dump /boot/fit.itb {fit}",
                    f"{disk}?offset={partitions(disk)['a'][0]}"], check=True,
                   capture_output=True)
    code, text, err = inspect(fit)
    assert code == 0, err
    assert "image kernel" in text and "signed sha256,rsa2048:dev" in text


@needs_tools
def test_not_firmware_or_damaged_is_one_line(built, tmp_path):
    other = tmp_path / "other.img"
    other.write_bytes(b"")
    other.touch()
    subprocess.run(["truncate", "-s", "8M", str(other)], check=True)
    subprocess.run(["sfdisk", "-q", str(other)], input="label: gpt\nsize=2M, name=root\n",
                   text=True, check=True, capture_output=True)
    truncated = tmp_path / "truncated.img"
    dd(built / "rootfs.firmware", truncated, count=200 * MIB)
    for path, words in ((other, "not an lxembed firmware image"),
                        (truncated, "damaged")):
        code, out, err = inspect(path)
        assert code == 2 and out == "", (path, out, err)
        lines = err.strip().splitlines()
        assert lines[0].startswith("lxembed: error:") and words in lines[0], err
        assert "Traceback" not in err


@needs_tools
@pytest.mark.slow
def test_lxembed_test_root_firmware_on_a_device_disk(built, tmp_path):
    """`lxembed test --root firmware --device`: U-Boot boots slot A, the first boot formats
    data, the init marks the slot good, the recipe's checks pass; the device disk keeps all
    that, the image is not changed."""
    image = built / "rootfs.firmware"
    before = (image.stat().st_mtime_ns, partitions(image)["env"])
    with open(image, "rb") as fh:
        fh.seek(before[1][0])
        env_before = fh.read(2 * ENV_COPY)
    device = tmp_path / "device.img"
    result = run_lxembed("test", "--root", "firmware", "-b", BOARD, "-r",
                         str(built.parent / "v1.toml"), "--image", str(built), "--device",
                         str(device), "--json")
    report = json.loads(result.stdout)
    print(f"boot to ready through U-Boot: {report['boot_seconds']} s")
    assert result.returncode == 0 and report["ok"], result.stdout[-3000:] + result.stderr
    names = [c["name"] for c in report["checks"]]
    assert names[0] == "firmware-marked-good" and "uname-arch" in names
    assert "slot A, version 1.0: marked good" in report["checks"][0]["output"]
    log = (built / "console.log").read_text(errors="replace")
    assert "U-Boot 20" in log and "lxembed-boot: slot A" in log
    assert "formatting the data partition" in log
    # The device disk: data formatted, the state written twice (boot.scr's count, then the
    # init's mark-good), slot A good again.
    r = inspect_json(device)
    assert r["data"]["filesystem"] == "ext4" and r["problems"] == []
    assert r["env"]["current"] == 1 and [c["flags"] for c in r["env"]["copies"]] == [3, 2]
    assert r["env"]["vars"]["BOOT_A_LEFT"] == "2"
    with open(image, "rb") as fh:
        fh.seek(before[1][0])
        assert fh.read(2 * ENV_COPY) == env_before
    assert image.stat().st_mtime_ns == before[0]
