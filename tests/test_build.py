"""Building real images from Debian packages: every board, reproducibility, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import make_deb, run_lxembed
from elftools.elf.elffile import ELFFile

from lxembed.config import load_board

QEMU_BOARDS = ["qemu-x86_64", "qemu-i386", "qemu-arm64", "qemu-armhf", "qemu-armel",
               "qemu-mipsel", "qemu-mips64el", "qemu-riscv64"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every qemu board's busybox image, built once: board -> (output dir, build JSON)."""
    out = {}
    for board in QEMU_BOARDS:
        dest = tmp_path_factory.mktemp(board)
        result = run_lxembed("build", "--board", board, "--recipe", "busybox", "--output",
                             str(dest), "--format", "cpio.zst,tar.zst,dir", "--json", check=True)
        out[board] = (dest, json.loads(result.stdout))
    return out


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_busybox_is_an_elf_of_the_board_arch(built, board):
    dest, info = built[board]
    arch = load_board(board).arch
    formats = {a["format"] for a in info["artifacts"]}
    assert {"cpio.zst", "tar.zst", "dir", "manifest"} <= formats
    with open(dest / "rootfs/bin/busybox", "rb") as fh:
        elf = ELFFile(fh)
        assert elf.header["e_machine"] == {3: "EM_386", 8: "EM_MIPS", 40: "EM_ARM",
                                           62: "EM_X86_64", 183: "EM_AARCH64",
                                           243: "EM_RISCV"}[arch.elf_machine]
        assert elf.elfclass == arch.elf_class
        assert elf.little_endian == (arch.elf_endian == "little")
    mode = os.stat(dest / "rootfs/bin/busybox").st_mode
    assert not mode & 0o6000, "busybox must never be setuid"


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_busybox_uname_runs_under_qemu_user(built, board):
    dest, _ = built[board]
    arch = load_board(board).arch
    cmd = [str(dest / "rootfs/bin/busybox"), "uname", "-m"]
    if not arch.is_host():
        cmd = [arch.qemu_user_path] + cmd
    uname = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    assert uname in arch.uname


def test_image_contents(built):
    dest, _ = built["qemu-arm64"]
    manifest = json.loads((dest / "manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["entries"]}
    for node in ("console", "null", "zero", "random", "urandom", "tty", "ptmx"):
        assert entries[f"/dev/{node}"]["type"] == "char"
    assert entries["/dev/pts"]["type"] == "dir"
    assert entries["/bin/sh"]["target"] == "/bin/busybox"
    assert entries["/sbin/init"]["target"] == "/bin/busybox"
    assert not any(p.startswith("/usr/share/doc/") for p in entries)
    root = dest / "rootfs"
    assert (root / "etc/hostname").read_text() == "lxembed\n"
    assert "::sysinit:/etc/init.d/rcS" in (root / "etc/inittab").read_text()
    assert "iface eth0 inet dhcp" in (root / "etc/network/interfaces").read_text()


def test_busybox_cpio_zst_under_one_megabyte(built):
    for board, (_, info) in built.items():
        cpio = next(a for a in info["artifacts"] if a["format"] == "cpio.zst")
        assert cpio["bytes"] < 1_000_000, board


@pytest.mark.parametrize("board", ["qemu-mipsel", "qemu-riscv64"])  # bookworm, trixie
def test_two_builds_are_byte_identical(tmp_path, board):
    shas = []
    for name in ("a", "b"):
        result = run_lxembed("build", "-b", board, "-r", "busybox", "-o",
                             str(tmp_path / name), "-f", "cpio.zst,tar.zst,cpio.gz,tar,dir",
                             "--json", check=True)
        shas.append({a["format"]: a["sha256"] for a in json.loads(result.stdout)["artifacts"]})
    assert shas[0] == shas[1]
    formats = {"cpio.zst", "tar.zst", "cpio.gz", "tar", "dir", "manifest"}
    assert set(shas[0]) == formats | {f"modules.{f}" for f in formats}


def _assert_failed_cleanly(result, out_dir, message):
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("lxembed: error")]
    assert len(errors) == 1
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_unknown_board_fails_cleanly(tmp_path):
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", "qemu-vax", "-r", "busybox", "-o", str(out))
    _assert_failed_cleanly(result, out, "unknown board 'qemu-vax'")


def test_unknown_recipe_key_fails_with_file_line(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('packages = ["busybox-static"]\noverlay = ["busybox-base"]\n')
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", "qemu-arm64", "-r", str(recipe), "-o", str(out))
    _assert_failed_cleanly(result, out, f"{recipe}:2: unknown key 'overlay'")


def test_malformed_toml_fails_with_file_line(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('packages = ["busybox-static"\nhostname = "x"\n')
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", "qemu-arm64", "-r", str(recipe), "-o", str(out))
    _assert_failed_cleanly(result, out, f"{recipe}:2: invalid TOML")


def test_unknown_package_fails_and_keeps_the_previous_image(tmp_path):
    out = tmp_path / "out"
    run_lxembed("build", "-b", "qemu-arm64", "-r", "busybox", "-o", str(out), check=True)
    before = (out / "rootfs.cpio.zst").read_bytes()
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "busybox"\npackages = ["no-such-package-lxembed"]\n')
    result = run_lxembed("build", "-b", "qemu-arm64", "-r", str(recipe), "-o", str(out))
    assert result.returncode != 0
    assert "unknown package 'no-such-package-lxembed'" in result.stderr
    assert (out / "rootfs.cpio.zst").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [
        ".lxembed-build.json", "manifest.json", "modules.cpio.zst", "modules.manifest.json",
        "rootfs.cpio.zst"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.toml"]  # no stage left


@pytest.mark.parametrize("entries, message", [
    ([("./usr/", "dir", None), ("./usr/../../etc/evil", "file", b"x")], "escapes the root"),
    ([("./usr/lib/", "dir", None), ("./usr/lib/esc", "symlink", "../../../etc")],
     "points outside the root"),
])
def test_hostile_deb_is_refused(tmp_path, entries, message):
    deb = make_deb(tmp_path / "evil.deb", entries)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'base = "busybox"\ndebs = ["{deb.name}"]\n')
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", "qemu-arm64", "-r", str(recipe), "-o", str(out))
    _assert_failed_cleanly(result, out, message)
    assert "evil.deb" in result.stderr


def test_overlay_symlink_outside_rootfs_is_refused(tmp_path):
    overlay = tmp_path / "overlays" / "bad" / "etc"
    overlay.mkdir(parents=True)
    os.symlink("../../../../host-secret", overlay / "link")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.toml").write_text('base = "busybox"\noverlays = ["bad"]\n')
    out = tmp_path / "out"
    env = dict(os.environ, LXEMBED_PATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "lxembed", "build", "-b", "qemu-arm64",
                             "-r", "r", "-o", str(out)], capture_output=True, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    _assert_failed_cleanly(result, out, "points outside the rootfs")


def test_local_deb_is_installed(tmp_path):
    deb = make_deb(tmp_path / "ok.deb", [("./opt/", "dir", None),
                                         ("./opt/hello.txt", "file", b"hello\n")])
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'base = "busybox"\ndebs = ["{deb.name}"]\n')
    result = run_lxembed("build", "-b", "qemu-armel", "-r", str(recipe), "-o",
                         str(tmp_path / "out"), "-f", "tar", check=True)
    assert result.returncode == 0
    with tarfile.open(tmp_path / "out/rootfs.tar") as tar:
        assert tar.extractfile("./opt/hello.txt").read() == b"hello\n"
