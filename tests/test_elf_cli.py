"""`lxembed ldd` and `lxembed inspect`, and reading images back (tar, cpio newc; gz, zst)."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest
import zstandard
from conftest import run_lxembed
from test_elf_closure import EL, HF, TRIPLET, armhf_tree
from test_elf_synth import ET_EXEC, make_elf

from lxembed.cli import main
from lxembed.elf.image_reader import read_cpio, read_image
from lxembed.errors import UserError
from lxembed.tree import CHAR, DIR, FILE, HARDLINK, SYMLINK, Entry
from lxembed.writers.cpio import write_cpio
from lxembed.writers.directory import write_dir
from lxembed.writers.tar import write_tar


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def sysroot(tmp_path):
    root = tmp_path / "sysroot"
    write_dir(armhf_tree(), root)
    return root


# -- ldd ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/usr/bin/curl"), reason="no host curl")
def test_ldd_on_the_host_as_a_user_runs_it():
    result = run_lxembed("ldd", "/usr/bin/curl")
    assert result.returncode == 0, result.stderr
    assert "\tlibcurl.so.4 => /" in result.stdout and "ld-linux-x86-64.so.2" in result.stdout


def test_ldd_cross_arch(capsys, sysroot):
    code, out, _ = run(capsys, "ldd", "--sysroot", str(sysroot), "/usr/bin/prog")
    assert code == 0
    assert out.splitlines() == [
        "\tlibfoo.so.1 => /lib/arm-linux-gnueabihf/libfoo.so.1",
        "\tlibc.so.6 => /lib/arm-linux-gnueabihf/libc.so.6",
        "\t/lib/ld-linux-armhf.so.3",
    ]
    # a host path under the sysroot means the same file
    code, out2, _ = run(capsys, "ldd", "--sysroot", str(sysroot), str(sysroot / "usr/bin/prog"))
    assert (code, out2) == (0, out)


def test_ldd_json_and_missing(capsys, sysroot):
    (sysroot / "usr/bin/needy").write_bytes(
        make_elf(
            **HF,
            e_type=ET_EXEC,
            interp="/lib/ld-linux-armhf.so.3",
            needed=["libfoo.so.1", "libgone.so.1"],
        )
    )
    (sysroot / "usr/bin/script").write_text("#!/bin/sh\n")
    code, out, err = run(
        capsys,
        "ldd",
        "--sysroot",
        str(sysroot),
        "/usr/bin/needy",
        "/usr/bin/prog",
        "/usr/bin/script",
    )
    assert code == 1
    assert "/usr/bin/needy:\n" in out and "\tlibgone.so.1 => not found" in out
    assert "/usr/bin/script:\n\tnot a dynamic executable" in out
    assert "libgone.so.1 not found: needed by /usr/bin/needy" in err
    code, out, _ = run(capsys, "ldd", "--json", "--sysroot", str(sysroot), "/usr/bin/needy")
    report = json.loads(out)
    assert code == 1 and report["arch"] == "armhf"
    [entry] = report["files"]
    assert [m["name"] for m in entry["missing"]] == ["libgone.so.1"]
    libfoo = next(lib for lib in entry["libraries"] if lib["name"] == "libfoo.so.1")
    assert libfoo["real_path"] == f"{TRIPLET}/libfoo.so.1.2.3"
    assert libfoo["needed_by"] == "/usr/bin/needy"


def test_ldd_malformed_and_wrong_arch_without_traceback(sysroot):
    (sysroot / "usr/bin/cut").write_bytes(make_elf(**HF)[:40])
    (sysroot / "usr/bin/soft").write_bytes(make_elf(**EL, e_type=ET_EXEC))
    result = run_lxembed(
        "ldd", "--arch", "armhf", "--sysroot", str(sysroot), "/usr/bin/cut", "/usr/bin/soft"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: /usr/bin/cut is a malformed or truncated ELF file" in result.stdout
    assert (
        "error: /usr/bin/soft is an ELF for armel (ARM EABI5 soft-float), the board is armhf"
        in result.stdout
    )
    result = run_lxembed("ldd", "--sysroot", str(sysroot / "nowhere"), "/usr/bin/prog")
    assert result.returncode == 2 and "Traceback" not in result.stderr


# -- reading images --------------------------------------------------------------------------------
def image_tree():
    t = armhf_tree()
    t.write(
        "/bin/su", make_elf(**HF, e_type=ET_EXEC, interp="/lib/ld-linux-armhf.so.3"), mode=0o4755
    )
    t.mkdir("/tmp", mode=0o1777)
    t.write("/etc/oops", b"anyone may write\n", mode=0o666)
    t.write("/usr/share/big.dat", b"x" * 100_000)
    t.entries["/bin/su2"] = Entry(HARDLINK, 0o4755, target="/bin/su")
    t.add("/dev/console", Entry(CHAR, 0o600, major=5, minor=1))
    return t


def compress(data: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(data)
    if how == "zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


@pytest.mark.parametrize("fmt", ["tar", "cpio"])
@pytest.mark.parametrize("how", ["", "gz", "zst"])
def test_images_read_back_exactly(tmp_path, fmt, how):
    tree = image_tree()
    buf = io.BytesIO()
    (write_tar if fmt == "tar" else write_cpio)(tree, buf)
    path = tmp_path / f"image.{fmt}{'.' + how if how else ''}"
    path.write_bytes(compress(buf.getvalue(), how))
    back, found = read_image(path)
    assert found == fmt + (f".{how}" if how else "")
    assert set(back.entries) == set(tree.entries)
    for p, entry in tree:
        got = back.entries[p]
        assert (got.mode, got.uid, got.gid) == (entry.mode, entry.uid, entry.gid), p
        if entry.type == SYMLINK:
            assert got.target == entry.target
        if entry.type in (FILE, HARDLINK):
            assert back.read(p) == tree.read(p), p
    assert (back.entries["/dev/console"].type, back.entries["/dev/console"].minor) == (CHAR, 1)


def _newc(name: str, mode: int, data: bytes = b"", ino: int = 1, nlink: int = 1) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def test_cpio_hardlinks_and_concatenated_archives():
    first = (
        _newc("bin", 0o40755)
        + _newc("bin/a", 0o100755, b"", 9, 2)
        + _newc("bin/b", 0o100755, b"DATA", 9, 2)
    )
    first += _newc("TRAILER!!!", 0)
    second = _newc("etc", 0o40755) + _newc("etc/x", 0o100644, b"x") + _newc("TRAILER!!!", 0)
    tree = read_cpio(first + b"\0" * 512 + second, "initrd")
    assert tree.entries["/bin/b"].type == FILE and tree.read("/bin/a") == b"DATA"
    assert tree.entries["/bin/a"].type == HARDLINK and tree.read("/etc/x") == b"x"
    with pytest.raises(UserError, match="truncated cpio"):
        read_cpio(first[:200], "initrd")
    with pytest.raises(UserError, match="bad cpio header"):
        read_cpio(b"070707" + b"0" * 200, "initrd")


def test_unreadable_images(tmp_path):
    (tmp_path / "junk.img").write_bytes(b"\x01" * 4096)
    with pytest.raises(UserError, match="not a directory, tar or cpio"):
        read_image(tmp_path / "junk.img")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"\0" * 30)
    with pytest.raises(UserError, match="bad.gz: corrupt gz compressed data"):
        read_image(tmp_path / "bad.gz")


# -- inspect ---------------------------------------------------------------------------------------
def test_inspect_json(capsys, tmp_path):
    buf = io.BytesIO()
    write_cpio(image_tree(), buf)
    (tmp_path / "initrd.cpio.zst").write_bytes(compress(buf.getvalue(), "zst"))
    code, out, _ = run(capsys, "inspect", "--json", str(tmp_path / "initrd.cpio.zst"))
    report = json.loads(out)
    assert code == 0, report
    assert report["format"] == "cpio.zst" and report["arch"] == "armhf"
    # prog, su, su2 (write_cpio stores hard links as copies), libc, libfoo, the loader
    assert report["architectures"] == {"armhf": 6}
    assert report["closures"] == {"checked": 5, "satisfied": 5, "broken": []}  # not the loader
    assert {s["path"] for s in report["setuid_setgid"]} >= {"/bin/su"}
    assert {w["path"]: w["sticky"] for w in report["world_writable"]} == {
        "/tmp": True,
        "/etc/oops": False,
    }
    assert report["biggest"][0] == {"path": "/usr/share/big.dat", "bytes": 100_000}


def test_inspect_refuses_and_reports(tmp_path):
    tree = image_tree()
    tree.write("/usr/bin/soft", make_elf(**EL, e_type=ET_EXEC, interp="/lib/ld-linux.so.3"))
    tree.write("/usr/bin/needy", make_elf(**HF, e_type=ET_EXEC, needed=["libgone.so.1"]))
    tree.write("/usr/lib/cut.so", make_elf(**HF)[:70])
    write_dir(tree, tmp_path / "root")
    result = run_lxembed("inspect", str(tmp_path / "root"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    out = result.stdout
    assert (
        "REFUSED /usr/bin/soft is an ELF for armel (ARM EABI5 soft-float), the board is armhf"
        in out
    )
    assert "REFUSED /usr/lib/cut.so is a malformed or truncated ELF file" in out
    assert "BROKEN /usr/bin/needy: libgone.so.1 not found: needed by /usr/bin/needy" in out
    assert "Biggest files:" in out and "/usr/share/big.dat" in out
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.add(tmp_path / "root", arcname=".")
    assert (
        run_lxembed("inspect", "--arch", "armhf", str(tmp_path / "t.tar"))
        .stdout.replace(str(tmp_path / "t.tar"), "X")
        .splitlines()[1:]
        == out.replace(str(tmp_path / "root"), "X").splitlines()[1:]
    )


def test_inspect_bad_input_is_a_user_error(tmp_path):
    (tmp_path / "x.img").write_bytes(b"hsqs" + b"\0" * 2000)
    result = run_lxembed("inspect", str(tmp_path / "x.img"))
    assert (
        result.returncode == 2 and "squashfs" in result.stderr and "Traceback" not in result.stderr
    )


def test_directory_reader_keeps_links_and_hardlinks(tmp_path):
    root = tmp_path / "r"
    write_dir(image_tree(), root)
    tree, fmt = read_image(root)
    assert fmt == "dir" and tree.entries["/lib"].type == SYMLINK
    su, su2 = tree.entries["/bin/su"], tree.entries["/bin/su2"]
    assert {su.type, su2.type} == {FILE, HARDLINK} and tree.read("/bin/su2") == tree.read("/bin/su")
    assert tree.entries["/tmp"].type == DIR and tree.entries["/tmp"].mode == 0o1777
