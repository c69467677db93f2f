"""The firmware format on a NAND board: the A/B layout as volumes of one UBI image.

No qemu machine here has NAND (and nandsim is not available), so the image is read the way
UBI's attach reads it: every erase block's EC and VID headers with their CRCs, the volume table
(both copies) from the layout volume, each volume's LEBs put back in order; what is inside is
then checked with the real tools (dumpimage on the FIT, unsquashfs on the root). The board is
qemu-arm64's with NAND flash: mt7621-router, the real NAND board, has no kernel nor U-Boot."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import zstandard
from conftest import make_key, run_lxembed

from lxembed.writers.swu import read_bundle

ROOT = Path(__file__).resolve().parents[1]
PEB = 128 * 1024
RECIPE = """base = "busybox-python"
[fit]
key = "keys/dev"

[firmware]
version = "{version}"
key = "keys/dev"
slot_size = "{slot}"
data_size = "16MiB"
tries = 2
"""
LAYOUT_VOLUME = 0x7FFFEFFF
VTBL_RECORD = 172
DYNAMIC, STATIC = 1, 2
AUTORESIZE = 1


def nand_board(tmp: Path, size: str = "512MiB") -> Path:
    """qemu-arm64's board file, its flash made NAND (its kernel and U-Boot kept)."""
    text = (ROOT / "boards" / "qemu-arm64.toml").read_text()
    text = re.sub(r"(?ms)^\[flash\].*?\n\n", "", text)
    board = tmp / "nand-arm64.toml"
    board.write_text(text + f'\n[flash]\ntype = "nand"\nerase_block = "128KiB"\n'
                     f'page_size = 2048\nsize = "{size}"\n')
    return board


def ubi_crc(data: bytes) -> int:
    return zlib.crc32(data) ^ 0xFFFFFFFF  # UBI: seeded with ~0, not inverted at the end


def read_ubi(path: Path, peb: int = PEB):
    """What UBI's attach sees: the volume table and each volume's LEBs, every CRC checked."""
    image = path.read_bytes()
    assert len(image) % peb == 0
    lebs, seqs = {}, set()
    for n in range(len(image) // peb):
        block = image[n * peb:(n + 1) * peb]
        magic, version, ec, vid_off, data_off, seq = struct.unpack_from(">IB3xQIII", block)
        assert magic == 0x55424923 and version == 1, f"PEB {n}: no EC header"
        assert struct.unpack_from(">I", block, 60)[0] == ubi_crc(block[:60]), f"PEB {n}: EC crc"
        seqs.add(seq)
        vid = block[vid_off:vid_off + 64]
        if vid == b"\xff" * 64:
            continue  # an erased block: no volume's
        vmagic, _, vol_type, _, _, vol_id, lnum = struct.unpack_from(">IBBBBII", vid)
        data_size, used_ebs, _, data_crc = struct.unpack_from(">IIII", vid, 20)
        assert vmagic == 0x55424921, f"PEB {n}: no VID header"
        assert struct.unpack_from(">I", vid, 60)[0] == ubi_crc(vid[:60]), f"PEB {n}: VID crc"
        data = block[data_off:]
        if vol_type == STATIC:
            data = data[:data_size]
            assert ubi_crc(data) == data_crc
        lebs[(vol_id, lnum)] = (vol_type, data)
    assert len(seqs) == 1  # one image sequence number: one image
    copies = [lebs[(LAYOUT_VOLUME, i)][1] for i in (0, 1)]
    assert copies[0] == copies[1], "the two volume table copies differ"
    volumes = {}
    for i in range(128):
        rec = copies[0][i * VTBL_RECORD:(i + 1) * VTBL_RECORD]
        assert struct.unpack_from(">I", rec, 168)[0] == ubi_crc(rec[:168]), f"vtbl {i} crc"
        reserved, _, _, vol_type, _, name_len = struct.unpack_from(">IIIBBH", rec)
        if reserved == 0:
            continue
        name = rec[16:16 + name_len].decode()
        count = sum(1 for vol, _ in lebs if vol == i)
        volumes[name] = {"id": i, "type": vol_type, "reserved": reserved, "flags": rec[144],
                         "data": b"".join(lebs[(i, n)][1] for n in range(count))}
        assert all((i, n) in lebs for n in range(count)), f"{name}: LEBs missing"
    return volumes


@pytest.fixture(scope="module")
def nand(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nand")
    make_key(tmp / "keys" / "dev")
    board = nand_board(tmp)
    (tmp / "v1.toml").write_text(RECIPE.format(version="1.0", slot="96MiB"))
    run_lxembed("build", "-b", str(board), "-r", str(tmp / "v1.toml"), "-o", str(tmp / "v1"),
                "-f", "firmware", check=True)
    return tmp


def test_the_volumes_are_the_documented_ab_layout(nand):
    ubi = nand / "v1" / "rootfs.firmware.ubi"
    assert not (nand / "v1" / "rootfs.firmware").exists()
    volumes = read_ubi(ubi)
    assert {n: v["id"] for n, v in volumes.items()} == {
        "ubootenv": 0, "ubootenv2": 1, "kernel_a": 2, "kernel_b": 3, "rootfs_a": 4,
        "rootfs_b": 5, "data": 6}
    assert all(v["type"] == DYNAMIC for v in volumes.values())
    assert volumes["data"]["flags"] & AUTORESIZE
    assert not any(volumes[n]["flags"] & AUTORESIZE for n in volumes if n != "data")
    leb = PEB - 2 * 2048  # EC and VID headers, a page each
    slot_lebs = 96 * (1 << 20) // leb + 1
    assert volumes["rootfs_a"]["reserved"] == volumes["rootfs_b"]["reserved"] == slot_lebs
    assert volumes["kernel_a"]["reserved"] == volumes["kernel_b"]["reserved"]
    # Written only where there is something: B and data hold no LEB (UBIFS formats data).
    for name in ("kernel_b", "rootfs_b", "data"):
        assert volumes[name]["data"] == b"", name


def test_the_environment_volumes_are_u_boots_redundant_copies(nand):
    volumes = read_ubi(nand / "v1" / "rootfs.firmware.ubi")
    flags = []
    for name in ("ubootenv", "ubootenv2"):
        copy = volumes[name]["data"][:0x4000]
        crc, flag = struct.unpack_from("<IB", copy)
        assert crc == zlib.crc32(copy[5:]), f"{name}: CRC"  # U-Boot's: plain crc32
        flags.append(flag)
        env = dict(v.split("=", 1) for v in copy[5:].split(b"\0\0")[0].decode().split("\0"))
        assert env["BOOT_ORDER"] == "A B" and env["BOOT_A_LEFT"] == "2"
        assert env["BOOT_B_LEFT"] == "0" and env["bootcmd"] == "run lxembed_boot"
        boot = env["lxembed_boot"]
        assert "ubi part ubi && ubi read 0x403f0000 ${kvol} && bootm 0x403f0000#conf-1" in boot
        assert "ubi.block=0,${rvol} root=${rdev}" in boot and "saveenv" in boot
        assert "setenv rdev /dev/ubiblock0_4" in boot and "setenv rdev /dev/ubiblock0_5" in boot
    assert flags == [1, 0]  # the first copy is the current one


def test_slot_a_holds_the_signed_fit_and_the_squashfs_root(nand, tmp_path):
    volumes = read_ubi(nand / "v1" / "rootfs.firmware.ubi")
    fit = tmp_path / "kernel_a.itb"
    fit.write_bytes(volumes["kernel_a"]["data"])
    listing = subprocess.run(["dumpimage", "-l", str(fit)], capture_output=True, text=True,
                             check=True).stdout
    assert "Image 0 (kernel)" in listing and "Sign algo:    sha256,rsa2048" in listing
    assert listing.count("Hash algo:    sha256") >= 2
    root = tmp_path / "rootfs_a.squashfs"
    root.write_bytes(volumes["rootfs_a"]["data"])
    cat = subprocess.run(["unsquashfs", "-cat", str(root), "/etc/fw_env.config"],
                         capture_output=True, text=True, check=True).stdout
    assert cat == "/dev/ubi0_0 0x0 0x4000\n/dev/ubi0_1 0x0 0x4000\n"
    listing = subprocess.run(["unsquashfs", "-l", str(root)], capture_output=True, text=True,
                             check=True).stdout
    assert "squashfs-root/sbin/lxembed-firmware" in listing
    assert "squashfs-root/boot/fit.itb" not in listing  # on NAND the FIT is a volume


def test_the_bundle_writes_the_other_slots_volumes_with_ubivol(nand):
    description, files = read_bundle(nand / "v1" / "rootfs.swu")
    assert [name for name, _ in files] == ["sw-description", "sw-description.sig",
                                          "kernel.fit.zst", "rootfs.squashfs.zst"]
    assert description.count('type = "ubivol"') == 4 and 'type = "raw"' not in description
    for slot in ("a", "b"):
        assert f'volume = "kernel_{slot}"' in description
        assert f'volume = "rootfs_{slot}"' in description
    # decompressed-size (what swupdate's ubivol needs for a compressed image) is the raw size
    volumes = read_ubi(nand / "v1" / "rootfs.firmware.ubi")
    sizes = [int(s) for s in re.findall(r'decompressed-size = "(\d+)"', description)]
    data = (nand / "v1" / "rootfs.swu").read_bytes()
    for name, size in zip(("kernel.fit.zst", "rootfs.squashfs.zst"), sizes[:2]):
        at = data.index(name.encode() + b"\0") + len(name) + 1
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(
            data[at + (-(110 + len(name) + 1) % 4):][:dict(files)[name]])
        assert len(raw) == size
        volume = volumes["kernel_a" if name.startswith("kernel") else "rootfs_a"]["data"]
        assert volume[:size] == raw and set(volume[size:]) <= {0xFF}


def test_the_updater_reads_the_nand_bundle_with_the_image_keyring(nand, tmp_path):
    if shutil.which("swupdate") is None:
        pytest.skip("swupdate is not installed")
    # swupdate's control sockets are fixed paths in /tmp: it gets a /tmp of its own (another
    # swupdate on the machine would otherwise answer), the files it reads open beforehand.
    script = ('exec 3<"$1" 4<"$2"; mount -t tmpfs tmpfs /tmp && exec swupdate -c '
              '-i /proc/self/fd/3 -k /proc/self/fd/4 -e stable,B -H nand-arm64:1.0')
    make_key(tmp_path / "other")
    for cert, ok in ((nand / "keys" / "dev" / "dev.crt", True),
                     (tmp_path / "other" / "other.crt", False)):
        result = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork",
                                 "--kill-child", "sh", "-c", script, "sh",
                                 str(nand / "v1" / "rootfs.swu"), str(cert)],
                                capture_output=True, text=True, timeout=120)
        assert (result.returncode == 0) == ok, result.stdout[-2000:] + result.stderr[-2000:]


def test_two_builds_are_identical(nand, tmp_path):
    run_lxembed("build", "-b", str(nand / "nand-arm64.toml"), "-r", str(nand / "v1.toml"),
                "-o", str(tmp_path / "again"), "-f", "firmware", check=True)
    for name in ("rootfs.firmware.ubi", "rootfs.swu"):
        assert (tmp_path / "again" / name).read_bytes() == (nand / "v1" / name).read_bytes()


def test_volumes_larger_than_the_flash_are_one_line_naming_the_recipe(nand, tmp_path):
    board = nand_board(tmp_path, size="128MiB")
    recipe = nand / "big.toml"
    recipe.write_text(RECIPE.format(version="1.0", slot="96MiB"))
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", str(board), "-r", str(recipe), "-o", str(out),
                         "-f", "firmware")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("lxembed: error:")]
    assert len(lines) == 1 and f"{recipe}:" in lines[0] and "erase blocks" in lines[0]
    assert "Traceback" not in result.stderr and not out.exists()


def test_mt7621_router_has_no_kernel_nor_u_boot_for_firmware(nand, tmp_path):
    result = run_lxembed("build", "-b", "mt7621-router", "-r", str(nand / "v1.toml"),
                         "-o", str(tmp_path / "out"), "-f", "firmware")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mt7621-router has no usable U-Boot: the firmware format cannot use it" \
        in result.stderr
    assert not (tmp_path / "out").exists()


# The boot command's last `reset` (and the no-slot one) made visible so one U-Boot run can try
# several boot states; `ubi` is not in qemu's U-Boot build: it fails, as a FIT that does not
# load would, and the command goes on to "did not boot".
HUSH_CASES = (
    # (BOOT_ORDER, A left, B left, trial) -> slot booted, its attempts left after this one
    (("A B", 2, 0, "none"), "slot A (volume rootfs_a), 1 attempts left"),
    (("B A", 0, 2, "B"), "slot B (volume rootfs_b), 1 attempts left"),
    (("B A", 1, 0, "B"), "slot A (volume rootfs_a), 0 attempts left"),
    (("A B", 0, 0, "none"), "no slot has attempts left: 2 each again"),
)


@pytest.mark.slow
def test_the_boot_command_picks_and_counts_the_slot_in_real_u_boot(nand, tmp_path):
    """The factory `lxembed_boot`, as the image holds it, run by Debian's U-Boot for qemu's
    arm64 virt machine: U-Boot's own hush decides which slot boots, with which kernel
    command line, and counts the attempt."""
    from lxembed.config import load_board
    from lxembed.config.uboot import uboot_settings
    from lxembed.runners.accel import choose_accel
    from lxembed.runners.qemu_system import QemuSetup
    from lxembed.runners.uboot import boot_disk, uboot_argv
    from lxembed.writers.fit import write_script_image

    board = load_board(str(nand / "nand-arm64.toml"))
    uboot = uboot_settings(board)
    if not Path(uboot["firmware"]).is_file():
        pytest.skip("u-boot-qemu is not installed")
    env = read_ubi(nand / "v1" / "rootfs.firmware.ubi")["ubootenv"]["data"][5:0x4000]
    env = dict(v.split("=", 1) for v in env.split(b"\0\0")[0].decode().split("\0"))
    boot = env["lxembed_boot"].replace("; reset", "; echo lxembed-test: reset")
    assert "'" not in boot
    script = [f"setenv lxembed_boot '{boot}'"]
    for (order, a, b, trial), _ in HUSH_CASES:
        script += [f'setenv BOOT_ORDER "{order}"; setenv BOOT_A_LEFT {a}; setenv BOOT_B_LEFT {b}; '
                   f"setenv lxembed_trial {trial}; setenv slot; echo lxembed-test: case",
                   "run lxembed_boot",
                   "echo lxembed-test: BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT} "
                   "bootargs=${bootargs}"]
    script.append("echo lxembed-test: done; reset")
    scr = tmp_path / "boot.scr"
    scr.write_bytes(write_script_image("\n".join(script) + "\n", board.arch.uboot, tmp_path))
    dummy = tmp_path / "dummy.fit"
    dummy.write_bytes(b"\0" * 4096)
    boot_disk(dummy, scr, tmp_path / "boot.img")
    setup = QemuSetup.for_board(board)
    argv = uboot_argv(setup, uboot, choose_accel(board.arch), tmp_path / "boot.img",
                      network=False)
    result = subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    console = result.stdout.decode(errors="replace").replace("\r", "")
    assert "lxembed-test: done" in console, console[-3000:]
    cases = console.split("lxembed-test: case")[1:]
    assert len(cases) == len(HUSH_CASES)
    for ((_, a, b, trial), says), out in zip(HUSH_CASES, cases):
        assert f"lxembed-boot: {says}" in out, out
        state = re.search(r"lxembed-test: BOOT_A_LEFT=(\d+) BOOT_B_LEFT=(\d+) bootargs=(.*)",
                          out)
        if "no slot" in says:
            assert state.groups()[:2] == ("2", "2"), out  # both get their attempts back
            continue
        slot = says.split()[1]
        left = {"A": a, "B": b}
        left[slot] -= 1
        assert state.groups()[:2] == (str(left["A"]), str(left["B"])), out
        n = {"A": 4, "B": 5}[slot]
        assert state.group(3).endswith(
            f" ubi.mtd=ubi ubi.block=0,rootfs_{slot.lower()} root=/dev/ubiblock0_{n} "
            f"lxembed.slot={slot}" + (" lxembed.trial" if trial == slot else "")), out
        # The attempt is saved (saveenv: here to qemu's flash, which fails) before the FIT
        # is loaded, so a kernel that hangs has been counted.
        assert out.index("Saving Environment") < out.index("lxembed-boot: slot")
        assert "Unknown command 'ubi'" in out and f"slot {slot} did not boot" in out


@pytest.mark.slow
def test_the_fits_initramfs_loads_ubi_and_fails_the_boot_without_its_slot(nand, tmp_path):
    """kernel_a's own kernel and initramfs under qemu, which has no NAND: the modules load,
    ubi gets the command line's ubi.mtd= without the init passing it (busybox's modprobe
    does; the init passing it too would attach the MTD twice) and fails only for want of an
    MTD device, and a slot that is not there is a failed boot (the kernel panics, for U-Boot
    to count), not a hang."""
    import dataclasses

    from lxembed.config import load_board
    from lxembed.runners.accel import choose_accel
    from lxembed.runners.qemu_system import QemuSetup, qemu_argv
    from lxembed.sources.kernel import fetch_kernel

    board = load_board(str(nand / "nand-arm64.toml"))
    fit = tmp_path / "kernel_a.itb"
    fit.write_bytes(read_ubi(nand / "v1" / "rootfs.firmware.ubi")["kernel_a"]["data"])
    listing = subprocess.run(["dumpimage", "-l", str(fit)], capture_output=True, text=True,
                             check=True).stdout
    parts = {}
    for index, name in enumerate(re.findall(r"Image \d+ \((\w+)\)", listing)):
        parts[name] = tmp_path / name
        subprocess.run(["dumpimage", "-T", "flat_dt", "-p", str(index), "-o",
                        str(parts[name]), str(fit)], check=True, capture_output=True)
    kernel = dataclasses.replace(fetch_kernel(board), image=parts["kernel"], vmlinux=None)
    setup = QemuSetup.for_board(board)
    argv = qemu_argv(setup, kernel, parts["ramdisk"], choose_accel(board.arch), network=False,
                     append="ubi.mtd=ubi ubi.block=0,rootfs_a root=/dev/ubiblock0_4 "
                            "lxembed.slot=A")
    result = subprocess.run(argv, capture_output=True, timeout=180, stdin=subprocess.DEVNULL)
    console = result.stdout.decode(errors="replace").replace("\r", "")
    tail = console[-3000:]
    assert "UBI error: cannot open mtd ubi," in console, tail
    assert "lxembed-firmware: cannot load ubi\n" in console, tail
    for module in ("mtd", "squashfs", "overlay"):
        assert f"cannot load {module}\n" not in console, tail
    assert "lxembed-firmware: slot /dev/ubiblock0_4 does not mount: this boot failed" in console
    assert "Kernel panic" in console and "Attempted to kill init" in console


def test_a_root_larger_than_its_slot_volume_is_one_line_naming_slot_size(nand, tmp_path):
    recipe = nand / "small.toml"
    recipe.write_text(RECIPE.format(version="1.0", slot="8MiB"))
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", str(nand / "nand-arm64.toml"), "-r", str(recipe),
                         "-o", str(out), "-f", "firmware")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("lxembed: error:")]
    assert len(lines) == 1 and f"{recipe}:8: the root needs" in lines[0], result.stderr
    assert "a slot is 8 MiB" in lines[0] and not out.exists()
