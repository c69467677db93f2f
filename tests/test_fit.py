"""The fit format (mkimage) and booting it through U-Boot in qemu (`--boot uboot`): what
dumpimage reads out of a FIT, two builds byte-identical, a signed FIT booted by U-Boot with the
key in its control dtb, and the same U-Boot refusing a FIT signed by another key or changed by
one byte; the mistakes a user can make, as one line and exit 2."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import make_key, run_lxembed

from lxembed.config import load_plan
from lxembed.runners import load_checks
from lxembed.runners.accel import choose_accel
from lxembed.runners.qemu_system import GuestRun, QemuSetup, check_guest
from lxembed.runners.uboot import uboot_run
from lxembed.sources.kernel import fetch_kernel
from lxembed.writers.fit import DATA_POSITION

BOARD = "qemu-arm64"


def signed_recipe(where: Path, key: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "signed.toml"
    path.write_text(f'base = "busybox"\n\n[fit]\nkey = "{key}"\n')
    return path


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """A signed FIT built twice, one signed by another key of the same name, one unsigned."""
    tmp = tmp_path_factory.mktemp("fit")
    make_key(tmp / "keys" / "dev")
    make_key(tmp / "other" / "keys" / "dev")  # same name, other key material
    recipe = signed_recipe(tmp, "keys/dev")
    other = signed_recipe(tmp / "other", "keys/dev")
    out = {}
    for label, rec in (("a", recipe), ("b", recipe), ("other", other), ("plain", "busybox")):
        run_lxembed("build", "-b", BOARD, "-r", str(rec), "-o", str(tmp / "out" / label),
                    "--format", "fit", check=True)
        out[label] = tmp / "out" / label
    return out


def test_write_fit_from_a_small_tree(tmp_path):
    """The writer alone (no Debian packages): a signed FIT of a tiny tree and a fake kernel,
    read back by dumpimage; a second write is the same bytes; a device tree goes in when given."""
    from lxembed.tree import RootfsTree
    from lxembed.writers.fit import FitInputs, write_fit
    make_key(tmp_path / "keys" / "dev")
    tree = RootfsTree()
    tree.write("/init", b"#!/bin/sh\n", mode=0o755, mtime=1704067200)
    inputs = FitInputs(b"\x00kernel" * 1000, "arm64", 0x40400000, "6.1-test",
                       fdt=b"\xd0\x0d\xfe\xed" + b"\x00" * 60, key=tmp_path / "keys" / "dev")
    outputs = []
    for i in range(2):
        fit = tmp_path / f"{i}.fit"
        with open(fit, "wb") as fh:
            outputs.append((fit, write_fit(tree, None, fh, inputs, 1704067200, "test")))
    (a, key_a), (b, key_b) = outputs
    assert a.read_bytes() == b.read_bytes() and key_a == key_b and key_a.startswith(b"\xd0\x0d")
    listing = dumpimage(a)
    assert re.findall(r"Image \d+ \((\w+)\)", listing) == ["kernel", "fdt", "ramdisk"]
    assert listing.count("Hash algo:    sha256") == 3
    assert "Sign algo:    sha256,rsa2048:dev" in listing and "FDT:          fdt" in listing


def dumpimage(fit: Path) -> str:
    return subprocess.run(["dumpimage", "-l", str(fit)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.slow
def test_fit_lists_hashed_images_and_is_reproducible(fits, tmp_path):
    fit = fits["a"] / "rootfs.fit"
    listing = dumpimage(fit)
    images = re.findall(r"Image (\d+) \((\w+)\)", listing)
    assert [n for _, n in images] == ["kernel", "ramdisk"]  # virt has no dtb: qemu makes it
    hashes = re.findall(r"Hash algo:\s+sha256\s+Hash value:\s+([0-9a-f]{64})", listing)
    assert len(hashes) == 2
    # Each listed hash is the sha256 of the image dumpimage extracts.
    for (index, name), digest in zip(images, hashes):
        part = tmp_path / name
        subprocess.run(["dumpimage", "-T", "flat_dt", "-p", index, "-o", str(part), str(fit)],
                       check=True, capture_output=True)
        assert hashlib.sha256(part.read_bytes()).hexdigest() == digest, name
    assert "Sign algo:    sha256,rsa2048:dev" in listing
    assert "Load Address: 0x40400000" in listing  # the board's [uboot] kernel_load
    ramdisk = (tmp_path / "ramdisk").read_bytes()
    # The rootfs cpio, then the kernel-modules segment, as a -kernel boot's initramfs.
    assert ramdisk.startswith(b"070701") and b"/virtio_net.ko" in ramdisk
    key = subprocess.run(["fdtget", str(fits["a"] / "rootfs.fit.key.dtb"),
                          "/signature/key-dev", "required"], capture_output=True, text=True)
    assert key.stdout.strip() == "conf"
    # mkimage's timestamps are the build's epoch, not the time of the build.
    epoch = json.loads((fits["a"] / "manifest.json").read_text())["source_date_epoch"]
    stamp = subprocess.run(["fdtget", "-t", "u", str(fit), "/", "timestamp"],
                           capture_output=True, text=True, check=True)
    assert int(stamp.stdout) == epoch
    for name in ("rootfs.fit", "rootfs.fit.key.dtb"):
        assert (fits["a"] / name).read_bytes() == (fits["b"] / name).read_bytes(), name
    assert fit.read_bytes() != (fits["other"] / "rootfs.fit").read_bytes()


def _boot(fit: Path, key_dtb: Path, log: Path, checks: bool):
    plan = load_plan(BOARD, "busybox")
    setup = QemuSetup.for_board(plan.board)
    kernel = fetch_kernel(plan.board)
    accel = choose_accel(plan.arch, None)
    with uboot_run(plan.board, setup, accel, fit, key_dtb) as argv:
        return check_guest(plan.board, "busybox", setup, kernel, fit, accel,
                           load_checks(plan, "system") if checks else [], log,
                           GuestRun(argv=argv))


@pytest.mark.slow
@pytest.mark.qemu
def test_uboot_boots_the_signed_fit_and_refuses_others(fits, tmp_path):
    key = fits["a"] / "rootfs.fit.key.dtb"
    good = _boot(fits["a"] / "rootfs.fit", key, tmp_path / "good.log", checks=True)
    text = (tmp_path / "good.log").read_text(errors="replace")
    assert good.ok, text[-3000:]
    assert len(good.checks) >= 5 and all(c.ok for c in good.checks)
    assert "sha256,rsa2048:dev+ OK" in text  # U-Boot checked the signature, not just hashes
    assert "Found U-Boot script /boot.scr" in text
    assert "XIP Kernel Image" in text  # loaded where it runs: no second copy of the kernel

    # The same U-Boot and key; a FIT signed by another key of the same name.
    other = _boot(fits["other"] / "rootfs.fit", key, tmp_path / "other.log", checks=False)
    text = (tmp_path / "other.log").read_text(errors="replace")
    assert not other.ok and "Failed to verify required signature" in text
    assert "Starting kernel" not in text and "lxembed-uboot: the FIT was refused" in text

    # An unsigned FIT: the key is required.
    plain = _boot(fits["plain"] / "rootfs.fit", key, tmp_path / "plain.log", checks=False)
    text = (tmp_path / "plain.log").read_text(errors="replace")
    assert not plain.ok and "Failed to verify required signature" in text
    assert "Starting kernel" not in text

    # The good FIT with one byte of the kernel changed.
    tampered = tmp_path / "tampered.fit"
    data = bytearray((fits["a"] / "rootfs.fit").read_bytes())
    data[DATA_POSITION + 0x1000] ^= 0x01  # inside the kernel, the first image's data
    tampered.write_bytes(bytes(data))
    bad = _boot(tampered, key, tmp_path / "tampered.log", checks=False)
    text = (tmp_path / "tampered.log").read_text(errors="replace")
    assert not bad.ok and "Bad Data Hash" in text and "Starting kernel" not in text


def test_uboot_refused_on_a_board_without_one(tmp_path):
    out = tmp_path / "out"
    result = run_lxembed("test", "-b", "qemu-mipsel", "-r", "busybox", "--boot", "uboot",
                         "-o", str(out))
    assert result.returncode == 2
    first = result.stderr.strip().splitlines()[0]
    assert re.search(r"boards/qemu-mipsel\.toml:\d+: board qemu-mipsel", first), result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("key, missing", [("keys/none", "no such directory"),
                                          ("keys/half", "no half.crt")])
def test_a_missing_key_is_one_line_naming_the_recipe(tmp_path, key, missing):
    (tmp_path / "keys" / "half").mkdir(parents=True)
    (tmp_path / "keys" / "half" / "half.key").write_text("not used\n")
    recipe = signed_recipe(tmp_path, key)
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", BOARD, "-r", str(recipe), "-o", str(out),
                         "--format", "fit")
    assert result.returncode == 2, result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert f"{recipe}:4" in first and missing in first, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_fit_on_a_board_without_uboot_is_refused(tmp_path):
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", "qemu-mipsel", "-r", "busybox", "-o", str(out),
                         "--format", "fit")
    assert result.returncode == 2
    first = result.stderr.strip().splitlines()[0]
    assert "boards/qemu-mipsel.toml" in first and "no FIT support" in first, result.stderr
    assert "qemu-arm64" in result.stderr  # the hint names the boards that have one
    assert "Traceback" not in result.stderr and not out.exists()


if shutil.which("mkimage") is None:  # pragma: no cover - quickstart installs u-boot-tools
    pytestmark = pytest.mark.skip("u-boot-tools is not installed")
