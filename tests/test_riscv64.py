"""qemu-riscv64 beyond busybox (which test_qemu_system, test_qemu_user and test_build cover with
every board): the container recipes under qemu-system and qemu-user, the arch names the
container formats write, and the qemu command line (OpenSBI as -bios)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_lxembed

from lxembed.config import load_board
from lxembed.runners.accel import choose_accel
from lxembed.runners.qemu_system import QemuSetup, qemu_argv
from lxembed.sources.kernel import Kernel

BOARD = "qemu-riscv64"
ARCH = load_board(BOARD).arch
HAVE_QEMU_SYSTEM = shutil.which(ARCH.qemu_system_path) is not None


def test_qemu_command_line_starts_opensbi_and_the_kernel():
    setup = QemuSetup.for_board(load_board(BOARD))
    kernel = Kernel("linux-image-6.12.0-riscv64", "6.12-1", "linux-image-riscv64", "riscv64",
                    "6.12.0-riscv64", Path("/k/Image"), None, Path("/k/modules"))
    argv = qemu_argv(setup, kernel, Path("/i.cpio"), choose_accel(ARCH))
    assert argv[0] == "/usr/bin/qemu-system-riscv64"
    assert argv[argv.index("-M") + 1] == "virt" and "-cpu" not in argv
    assert argv[argv.index("-bios") + 1] == ARCH.qemu_bios
    assert argv[argv.index("-kernel") + 1] == "/k/Image"
    assert argv[argv.index("-append") + 1].startswith("console=ttyS0 ")
    assert "virtio-net-pci,netdev=n0,romfile=" in argv
    if HAVE_QEMU_SYSTEM:  # qemu-system-data ships the firmware the table names
        assert os.path.isfile(ARCH.qemu_bios)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["container-busybox", "container-python"])
@pytest.mark.parametrize("mode", ["system", "user"])
def test_container_recipes_pass_their_checks(tmp_path, recipe, mode):
    if mode == "system" and not HAVE_QEMU_SYSTEM:
        pytest.skip(f"{ARCH.qemu_system_path} is not installed")
    if mode == "user" and os.geteuid() != 0:
        pytest.skip("qemu-user checks need root")
    args = ["test", "-b", BOARD, "-r", recipe, "--json", "-o", str(tmp_path)]
    result = run_lxembed(*args + (["--user"] if mode == "user" else []))
    assert result.stdout.strip().startswith("{"), result.stderr[-3000:]
    report = json.loads(result.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert result.returncode == 0 and report["ok"], (failed, result.stderr[-2000:])
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["uname-arch"]["output"] == "riscv64"
    if mode == "system":  # set by the image's init (busybox's or lxembed's) on a real kernel
        assert checks["hostname"]["output"] == recipe


@pytest.mark.slow
def test_container_formats_name_riscv64(tmp_path):
    out = tmp_path / "out"
    run_lxembed("build", "-b", BOARD, "-r", "container-busybox", "-o", str(out),
                "-f", "lxc,oci,libvirt,oci-image", check=True)
    assert "lxc.arch = riscv64" in (out / "lxc/config").read_text().splitlines()
    assert "<type arch='riscv64'>" in (out / "libvirt/domain.xml").read_text().replace('"', "'")
    index = json.loads((out / "oci-image/index.json").read_text())
    manifest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((out / "oci-image/blobs/sha256" / manifest).read_text())
    config = manifest["config"]["digest"].split(":")[1]
    config = json.loads((out / "oci-image/blobs/sha256" / config).read_text())
    assert (config["architecture"], config["os"]) == ("riscv64", "linux")
