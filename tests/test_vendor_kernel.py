"""A board's own kernel ([kernel]).

The vendor kernel is made here from Debian's arm64 kernel, the .deb the sources layer fetches for
qemu-arm64: repacked under another package name and version (the kernel and its release,
/lib/modules/RELEASE, are Debian's), so nothing is downloaded that this test did not make. It
boots on qemu-arm64 and loads a module of its own; the files form (Image, a modules tarball, the
config) builds and boots too. Every mistake in [kernel] is one line naming the board's line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_lxembed, write_ar

VENDOR_NAME = "linux-image-vendor1-arm64"
VENDOR_VERSION = "6.1.0+vendor1"

BOARD = """description = "a vendor arm64 board: qemu's virt machine, the vendor's kernel"
arch = "arm64"
{extra}
[qemu]
machine = "virt"
cpu = "cortex-a57"

[kernel]
{kernel}
"""

# The dummy driver is a module in the kernel (not built in): loading it proves the module came
# from the vendor kernel's tree and matches the running kernel.
RECIPE = """base = "busybox"
modules = ["dummy"]

[[checks]]
name = "vendor-module"
command = "grep '^dummy ' /proc/modules && ip link add vendor0 type dummy && ip link show vendor0"
expect = "vendor0"
"""


def lxembed_test(board: Path, recipe: Path, out: Path) -> dict:
    """`lxembed test --json` of a board on qemu-system: its report."""
    proc = subprocess.run([sys.executable, "-m", "lxembed", "test", "-b", str(board), "-r",
                           str(recipe), "--json", "-o", str(out)], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert proc.stdout.strip().startswith("{"), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and report["ok"], (report["error"], failed, proc.stderr[-3000:])
    return report


def write_board(directory: Path, kernel: str, extra: str = "") -> Path:
    (directory / "recipe.toml").write_text(RECIPE)
    board = directory / "vendor-board.toml"
    board.write_text(BOARD.format(kernel=kernel, extra=extra))
    return board


def pack(tarball: Path, directory: Path, member: str) -> None:
    """A gzip tarball with the same bytes on every run: the kernel it carries is unpacked once
    into lxembed's cache, not once per test run."""
    subprocess.run(["tar", "--create", "--file", str(tarball), "--directory", str(directory),
                    "--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0",
                    "--numeric-owner", "--use-compress-program=gzip -n", member], check=True)


@pytest.fixture(scope="module")
def debian_arm64():
    """Debian's arm64 kernel, as qemu-arm64 boots it: (its .deb, the unpacked Kernel)."""
    from lxembed.config import load_board
    from lxembed.sources.kernel import debian_kernel_deb, fetch_kernel
    board = load_board("qemu-arm64")
    return debian_kernel_deb(board), fetch_kernel(board)


@pytest.fixture(scope="module")
def vendor_deb(tmp_path_factory, debian_arm64) -> Path:
    """Debian's kernel package under another name and version: its control rewritten (dpkg-deb
    reads it out, tar packs it back), its data.tar as it was."""
    from lxembed.sources.deb import ar_members
    deb, _ = debian_arm64
    work = tmp_path_factory.mktemp("vendor-deb")
    control = work / "control"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(control)], check=True)
    text = (control / "control").read_text()
    text = re.sub(r"^Package: .*$", f"Package: {VENDOR_NAME}", text, flags=re.M)
    text = re.sub(r"^Version: .*$", f"Version: {VENDOR_VERSION}", text, flags=re.M)
    (control / "control").write_text(text)
    pack(work / "control.tar.gz", control, ".")
    data = next((m, blob) for m, blob in ar_members(deb.read_bytes(), str(deb))
                if m.startswith("data.tar"))
    out = work / "kernel" / f"{VENDOR_NAME}_{VENDOR_VERSION}_arm64.deb"
    out.parent.mkdir()
    write_ar(out, [("debian-binary", b"2.0\n"),
                   ("control.tar.gz", (work / "control.tar.gz").read_bytes()), data])
    fields = subprocess.run(["dpkg-deb", "--field", str(out), "Package", "Version"],
                            capture_output=True, text=True, check=True).stdout
    assert fields == f"Package: {VENDOR_NAME}\nVersion: {VENDOR_VERSION}\n"
    return out


@pytest.fixture(scope="module")
def vendor_files(tmp_path_factory, debian_arm64) -> Path:
    """The files form: an Image, a modules tarball (`make modules_install` layout, a vendor's
    few modules: the network and virtio drivers) and the config; their directory."""
    _, kernel = debian_arm64
    work = tmp_path_factory.mktemp("vendor-files")
    shutil.copyfile(kernel.image, work / "Image")
    shutil.copyfile(kernel.image.parent / f"config-{kernel.release}", work / "config")
    tree = work / "install" / "lib" / "modules" / kernel.release
    kept = []
    for pattern in ("kernel/drivers/net/*.ko", "kernel/drivers/virtio/*.ko",
                    "kernel/net/core/*.ko"):
        for path in sorted(kernel.modules.glob(pattern)):
            rel = path.relative_to(kernel.modules)
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tree / rel)
            kept.append(str(rel))
    (tree / "modules.order").write_text("".join(f"{rel}\n" for rel in kept))
    shutil.copyfile(kernel.modules / "modules.builtin", tree / "modules.builtin")
    pack(work / "modules.tar.gz", work / "install", "lib")
    return work


def link_kernel(tmp_path: Path, source: Path) -> None:
    """The board's directory gets the kernel files beside it (paths are relative to it)."""
    (tmp_path / "kernel").symlink_to(source)


# -- the package form: boots, loads its module, checks recipes against its config ------------------
@pytest.mark.slow
@pytest.mark.qemu
def test_vendor_package_boots_and_loads_its_own_module(vendor_deb, tmp_path):
    link_kernel(tmp_path, vendor_deb.parent)
    board = write_board(tmp_path, f'package = "kernel/{vendor_deb.name}"')
    report = lxembed_test(board, tmp_path / "recipe.toml", tmp_path / "out")
    assert report["kernel"]["package"] == VENDOR_NAME
    assert report["kernel"]["version"] == VENDOR_VERSION
    assert re.fullmatch(r"[0-9a-f]{64}", report["kernel"]["sha256"])
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["vendor-module"]["ok"] and "vendor0" in checks["vendor-module"]["output"]
    assert checks["modules-loaded"]["ok"]
    manifest = json.loads((tmp_path / "out" / "modules.manifest.json").read_text())
    dummy = [e for e in manifest["entries"] if e["path"].endswith("/dummy.ko")]
    assert len(dummy) == 1 and dummy[0]["origin"] == f"{VENDOR_NAME} {VENDOR_VERSION}"
    release = report["kernel"]["release"]
    assert dummy[0]["path"] == f"/lib/modules/{release}/kernel/drivers/net/dummy.ko"


@pytest.mark.slow
def test_kernel_check_reads_the_vendor_package_config(vendor_deb, tmp_path):
    link_kernel(tmp_path, vendor_deb.parent)
    board = write_board(tmp_path, f'package = "kernel/{vendor_deb.name}"')
    result = run_lxembed("kernel-check", "-b", str(board), "--json", check=True)
    doc = json.loads(result.stdout)
    assert re.search(r"/kernels/local/linux-image-vendor1-arm64_.*/boot/config-",
                     doc["kernel_config"])
    rows = {r["capability"]: r for r in doc["capabilities"]}
    assert rows["802.1Q vlan"]["state"] == "module" and rows["802.1Q vlan"]["module"] == "8021q"


@pytest.mark.slow
def test_a_recipe_is_checked_against_the_kernels_own_config(vendor_files, tmp_path):
    """[kernel] config is what builds check a recipe against: a VLAN on a kernel without 8021q
    is refused at the recipe's line, before anything is built."""
    link_kernel(tmp_path, vendor_files)
    config = (vendor_files / "config").read_text()
    (tmp_path / "no-vlan.config").write_text(
        config.replace("CONFIG_VLAN_8021Q=m", "# CONFIG_VLAN_8021Q is not set"))
    board = write_board(tmp_path, 'image = "kernel/Image"\nmodules = "kernel/modules.tar.gz"\n'
                                  'config = "no-vlan.config"')
    (tmp_path / "vlan.toml").write_text('base = "busybox"\n\n[network]\ninterfaces = [\n'
                                        '  { name = "eth0.20", vlan = 20, link = "eth0" }]\n')
    result = run_lxembed("build", "-b", str(board), "-r", str(tmp_path / "vlan.toml"),
                         "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"lxembed: error: {tmp_path / 'vlan.toml'}:4: an interface "
                                    "sets vlan, but the board's kernel has no 802.1Q vlan")
    assert not (tmp_path / "out").exists()


# -- the files form: Image + modules tarball + config --------------------------------------------
@pytest.mark.slow
@pytest.mark.qemu
def test_vendor_files_build_and_boot(vendor_files, tmp_path):
    link_kernel(tmp_path, vendor_files)
    board = write_board(tmp_path, 'image = "kernel/Image"\nmodules = "kernel/modules.tar.gz"\n'
                                  'config = "kernel/config"')
    out = tmp_path / "build"
    built = run_lxembed("build", "-b", str(board), "-r", str(tmp_path / "recipe.toml"), "-o",
                        str(out), "-f", "cpio.zst", check=True)
    assert "modules from Image" in built.stderr
    manifest = json.loads((out / "modules.manifest.json").read_text())
    paths = {e["path"]: e for e in manifest["entries"]}
    release = next(p.split("/")[3] for p in paths if p.startswith("/lib/modules/"))
    dummy = paths[f"/lib/modules/{release}/kernel/drivers/net/dummy.ko"]
    assert dummy["origin"] == "Image local"
    etc_modules = paths["/etc/modules"]
    assert etc_modules["size"] > 0
    report = lxembed_test(board, tmp_path / "recipe.toml", tmp_path / "out")
    assert report["kernel"]["package"] == "Image" and report["kernel"]["release"] == release
    assert {c["name"] for c in report["checks"] if c["ok"]} >= {"vendor-module",
                                                                 "modules-loaded"}


# -- mistakes: one line each, exit status 2 -----------------------------------------------------
def _error(board: Path) -> str:
    result = run_lxembed("-q", "kernel-check", "-b", str(board))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lxembed: error: "), result.stderr
    return lines[0][len("lxembed: error: "):]


def _tiny_package(directory: Path, arch: str, files: dict) -> Path:
    """A small package built by dpkg-deb: control fields and the given files."""
    root = directory / f"pkg-{arch}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-image-6.1.0-1-tiny\nVersion: 1\nArchitecture: {arch}\n"
        "Maintainer: t <t@example.org>\nDescription: a kernel package with parts missing\n")
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    out = directory / f"tiny_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
                   check=True, capture_output=True)
    return out


@pytest.mark.parametrize("kernel, extra, line, message", [
    ('package = "nope.deb"', "", 9, "[kernel] package: no such file {dir}/nope.deb"),
    ('package = "a.deb"\nimage = "Image"', "", 8, "[kernel] names its kernel by `package`"),
    ('image = "Image"', "", 8, "[kernel] image needs `modules`"),
    ('package = "a.deb"\nmodules = "mods"', "", 10, "[kernel] modules: the package holds"),
    ('image = "Image"\nmodules = "Image"', "", 10, "[kernel] modules: {dir}/Image is neither a "
     "directory nor a tarball"),
    ('image = "Image"\nmodules = "m.tar.gz"', "", 10, "[kernel] modules: no such file "
     "{dir}/m.tar.gz"),
    ('package = "a.deb"', 'kernel_config = "x"', 3, "kernel_config: the board has a [kernel]"),
    ('image = "Image"\nmodules = "mods"', "", 10, "[kernel] modules: no lib/modules/RELEASE with "
     "modules.order in {dir}/mods"),
    ('image = "Image"\nmodules = "tree"', "", 9, "[kernel] image: Image is not a kernel image "
     "lxembed knows (an ELF vmlinux, arm64 Image, ARM zImage, x86 bzImage"),
    ('package = "a.deb"', "", 9, "[kernel] package: {dir}/a.deb: not a Debian package"),
])
def test_kernel_table_mistakes(tmp_path, kernel, extra, line, message):
    (tmp_path / "a.deb").write_text("not a package\n")
    (tmp_path / "Image").write_text("not a kernel\n")
    (tmp_path / "mods").mkdir()
    (tmp_path / "tree" / "lib" / "modules" / "6.1.0-1-arm64").mkdir(parents=True)
    (tmp_path / "tree" / "lib" / "modules" / "6.1.0-1-arm64" / "modules.order").write_text("")
    board = write_board(tmp_path, kernel, extra)
    assert _error(board).startswith(f"{board}:{line}: " + message.format(dir=tmp_path))


def test_a_modules_tarball_tar_cannot_read(tmp_path):
    (tmp_path / "Image").write_text("not a kernel\n")
    (tmp_path / "m.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 cut short")
    board = write_board(tmp_path, 'image = "Image"\nmodules = "m.tar.gz"')
    error = _error(board)
    assert error.startswith(f"{board}:10: [kernel] modules: {tmp_path}/m.tar.gz: cannot unpack "
                            "it (tar: "), error
    from lxembed.paths import cache_dir
    assert not [p for p in (cache_dir() / "kernels" / "local").glob(".modules-*")
                if p.is_dir()], "a half-unpacked tarball was left behind"


def test_qemu_kernel_package_and_a_kernel_table_conflict(tmp_path):
    (tmp_path / "a.deb").write_text("x\n")
    board = tmp_path / "b.toml"
    board.write_text('arch = "arm64"\n[qemu]\nkernel_package = "linux-image-arm64"\n'
                     '[kernel]\npackage = "a.deb"\n')
    assert _error(board) == f"{board}:3: [qemu] kernel_package: the board boots its own [kernel]"


def test_a_package_for_another_architecture(tmp_path):
    deb = _tiny_package(tmp_path, "armhf", {"boot/vmlinuz-6.1.0-1-tiny": b"x"})
    board = write_board(tmp_path, f'package = "{deb.name}"')
    assert _error(board) == (f"{board}:9: [kernel] package: {deb.name} is a kernel for armhf, "
                             "but the board's kernel runs on arm64")


def test_a_package_without_a_kernel_image(tmp_path):
    deb = _tiny_package(tmp_path, "arm64", {"usr/share/doc/x/README": b"x"})
    board = write_board(tmp_path, f'package = "{deb.name}"')
    assert _error(board) == (f"{board}:9: [kernel] package: {deb.name}: no /boot/vmlinuz-* in "
                             "the package")


def test_a_package_whose_modules_are_for_another_release(tmp_path):
    deb = _tiny_package(tmp_path, "arm64", {
        "boot/vmlinuz-6.1.0-1-tiny": b"x",
        "lib/modules/6.1.0-2-tiny/modules.order": b""})
    board = write_board(tmp_path, f'package = "{deb.name}"')
    assert _error(board) == (
        f"{board}:9: [kernel] package: {deb.name} has /boot/vmlinuz-6.1.0-1-tiny, but its "
        "modules are for 6.1.0-2-tiny: the kernel's release and its modules directory must be "
        "one (/lib/modules/6.1.0-1-tiny)")
    # Nothing of it stays in the cache: the next run says the same.
    assert _error(board).endswith("(/lib/modules/6.1.0-1-tiny)")


@pytest.mark.slow
def test_an_arm64_image_on_an_armhf_board(vendor_files, tmp_path):
    link_kernel(tmp_path, vendor_files)
    board = tmp_path / "armhf.toml"
    board.write_text('arch = "armhf"\n\n[kernel]\nimage = "kernel/Image"\n'
                     'modules = "kernel/modules.tar.gz"\n')
    assert _error(board) == (f"{board}:4: [kernel] image: Image is an arm64 Image, a kernel for "
                             "arm64, but the board's kernel runs on armhf")


@pytest.mark.slow
def test_modules_of_another_release(vendor_files, debian_arm64, tmp_path):
    """A modules tree whose directory is not the image's release: the image's banner says it."""
    _, kernel = debian_arm64
    link_kernel(tmp_path, vendor_files)
    tree = tmp_path / "mods" / "lib" / "modules" / "6.1.0-99-vendor"
    tree.mkdir(parents=True)
    for name in ("modules.order", "modules.builtin"):
        shutil.copyfile(kernel.modules / name, tree / name)
    board = write_board(tmp_path, 'image = "kernel/Image"\nmodules = "mods"')
    assert _error(board) == (f"{board}:9: [kernel] image: Image is Linux {kernel.release}, but "
                             f"its modules are for 6.1.0-99-vendor ({tree})")


@pytest.mark.slow
def test_a_module_built_for_another_release(vendor_files, debian_arm64, tmp_path):
    """A gzip-compressed image (what bindeb-pkg installs on arm64) whose modules sit under its
    release but were built for another one: their vermagic says so."""
    _, kernel = debian_arm64
    subprocess.run(["gzip", "--keep", "--fast", "--stdout", str(vendor_files / "Image")],
                   stdout=open(tmp_path / "Image.gz", "wb"), check=True)
    tree = tmp_path / "mods" / "lib" / "modules" / kernel.release
    (tree / "kernel").mkdir(parents=True)
    # Debian's dummy.ko as another build of it would be: the vermagic names another release.
    data = (kernel.modules / "kernel/drivers/net/dummy.ko").read_bytes()
    old = f"vermagic={kernel.release} ".encode()
    new = f"vermagic={kernel.release[:-1]}X ".encode()
    assert old in data
    (tree / "kernel" / "dummy.ko").write_bytes(data.replace(old, new))
    (tree / "modules.order").write_text("kernel/dummy.ko\n")
    board = write_board(tmp_path, 'image = "Image.gz"\nmodules = "mods"')
    assert _error(board) == (f"{board}:10: [kernel] modules: kernel/dummy.ko was built for Linux "
                             f"{kernel.release[:-1]}X (its vermagic), but sits in lib/modules/"
                             f"{kernel.release}")


@pytest.mark.slow
def test_hardware_board_with_its_own_kernel_gets_its_modules(vendor_files, tmp_path):
    """A board with no [qemu] profile: the recipe's modules come from its kernel, with no qemu
    NIC driver among them; kernel-check without a config says how to give one."""
    link_kernel(tmp_path, vendor_files)
    board = tmp_path / "device.toml"
    board.write_text('arch = "arm64"\n\n[kernel]\nimage = "kernel/Image"\n'
                     'modules = "kernel/modules.tar.gz"\n')
    (tmp_path / "recipe.toml").write_text(RECIPE)
    run_lxembed("build", "-b", str(board), "-r", str(tmp_path / "recipe.toml"), "-o",
                str(tmp_path / "out"), "-f", "tar", check=True)
    manifest = json.loads((tmp_path / "out" / "modules.manifest.json").read_text())
    names = sorted(Path(e["path"]).name for e in manifest["entries"]
                   if e["path"].endswith(".ko"))
    assert names == ["dummy.ko"]
    result = run_lxembed("-q", "kernel-check", "-b", str(board))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (f"lxembed: error: {board}: board device's "
                                             "[kernel] has no config")


@pytest.mark.slow
def test_fit_holds_an_image_gz_unpacked(vendor_files, tmp_path):
    """bindeb-pkg installs arm64's Image.gz; qemu boots it as it is, and the FIT carries the
    Image U-Boot boots in place."""
    subprocess.run(["gzip", "--fast", "--no-name", "--stdout", str(vendor_files / "Image")],
                   stdout=open(tmp_path / "Image.gz", "wb"), check=True)
    (tmp_path / "modules.tar.gz").symlink_to(vendor_files / "modules.tar.gz")
    uboot = ('\n[uboot]\nfirmware = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"\n'
             'kernel_load = "0x40400000"\n')
    board = write_board(tmp_path, 'image = "Image.gz"\nmodules = "modules.tar.gz"')
    board.write_text(board.read_text() + uboot)
    run_lxembed("build", "-b", str(board), "-r", str(tmp_path / "recipe.toml"), "-o",
                str(tmp_path / "out"), "-f", "fit", check=True)
    kernel = tmp_path / "kernel.bin"
    subprocess.run(["dumpimage", "-T", "flat_dt", "-p", "0", "-o", str(kernel),
                    str(tmp_path / "out" / "rootfs.fit")], check=True, capture_output=True)
    assert kernel.read_bytes() == (vendor_files / "Image").read_bytes()


@pytest.mark.slow
def test_modules_for_another_architecture(vendor_files, tmp_path):
    """An arm64 Image with the modules of an ARM (armhf) kernel: Debian's, as qemu-armhf boots
    it, named as the board's modules directory."""
    from lxembed.config import load_board
    from lxembed.sources.kernel import fetch_kernel
    armhf = fetch_kernel(load_board("qemu-armhf"))
    link_kernel(tmp_path, vendor_files)
    board = write_board(tmp_path, f'image = "kernel/Image"\nmodules = "{armhf.modules}"')
    error = _error(board)
    assert re.fullmatch(rf"{re.escape(str(board))}:10: \[kernel\] modules: kernel/\S+\.ko is a "
                        "module for armhf, but the board's kernel runs on arm64", error), error
