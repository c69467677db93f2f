"""A generated corpus of damaged inputs: every case is one line `lxembed: error: ...`, exit 2.

Damaged .debs (xz, zst and gz data members: cut, bit-flipped) go through a recipe's `debs`;
damaged images (tar and cpio, raw, .gz, .zst, .xz: cut, garbage) through `inspect`. The board
has no qemu profile and the recipe no packages, so no case needs the network (an intact .deb of
each kind builds, as a control). Cases run through the CLI's main() in this process, so the
corpus stays quick; one case of each kind also runs as a real subprocess.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import random
import tarfile
import tempfile
from pathlib import Path

import pytest
import zstandard
from conftest import make_deb, run_lxembed

from lxembed.cli import main
from lxembed.compression import decompress, kind_by_magic, kind_by_name
from lxembed.elf.image_reader import read_image
from lxembed.errors import UserError
from lxembed.sources import apt as apt_module
from lxembed.sources.apt import VerifiedFiles
from lxembed.sources.deb import ar_members, extract_deb
from lxembed.sources.kernel import unpacked_pin
from lxembed.tree import RootfsTree
from lxembed.writers.cpio import write_cpio
from lxembed.writers.tar import write_tar

COMPRESSIONS = ("xz", "zst", "gz")


def _compress(data: bytes, kind: str) -> bytes:
    if kind == "xz":
        return lzma.compress(data, check=lzma.CHECK_CRC64)
    if kind == "zst":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)  # as dpkg-deb does
    if kind == "gz":
        return gzip.compress(data, mtime=0)
    return data


def _ar(members) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, blob in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode()
        out += blob + (b"\n" if len(blob) % 2 else b"")
    return bytes(out)


@functools.lru_cache(maxsize=None)  # the same bytes every time: made once per kind
def _deb_members(kind: str):
    """An ar member list of a small .deb whose data.tar is compressed with `kind`."""
    rand = random.Random(kind)
    entries = [("./opt/", "dir", None), ("./opt/hello.txt", "file", b"hello\n"),
               ("./opt/noise.bin", "file", rand.randbytes(40_000)),
               ("./opt/text.txt", "file", b"lxembed corpus line\n" * 3000)]
    with tempfile.TemporaryDirectory() as work:
        base = make_deb(Path(work) / "base.deb", entries).read_bytes()
    members = dict(ar_members(base, "base.deb"))
    data = gzip.decompress(members.pop("data.tar.gz"))
    return (("debian-binary", members["debian-binary"]),
            ("control.tar.gz", members["control.tar.gz"]),
            (f"data.tar.{kind}", _compress(data, kind)))


def _damage(members, how: str) -> bytes:
    """The .deb bytes, damaged: cut somewhere, or one bit flipped in the data member."""
    whole = _ar(members)
    data = members[-1][1]
    start = whole.index(data)  # where the data member's bytes begin
    if how == "empty":
        return b""
    if how == "cut-in-ar-header":
        return whole[:40]
    if how == "cut-in-data":
        return whole[:start + len(data) // 2]
    if how == "cut-last-data-byte":
        return whole[:start + len(data) - 1]
    if how == "bad-ar-size":  # the data member's size field says -5
        return whole[:start - 12] + b"-5        " + whole[start - 2:]
    if how == "stream-cut-inside-ar":  # the ar is consistent, the compressed stream is not
        return _ar([*members[:-1], (members[-1][0], data[:len(data) * 2 // 3])])
    position = {"flip-third": len(data) // 3, "flip-middle": len(data) // 2,
                "flip-tail": len(data) - 3}[how]
    damaged = bytearray(whole)
    damaged[start + position] ^= 0x04
    return bytes(damaged)


DAMAGES = ("empty", "cut-in-ar-header", "cut-in-data", "cut-last-data-byte", "bad-ar-size",
           "stream-cut-inside-ar", "flip-third", "flip-middle", "flip-tail")


def _one_error_line(code: int, err: str, *names: str) -> None:
    lines = [ln for ln in err.splitlines() if not ln.startswith("lxembed: hint: ")]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("lxembed: error: "), err
    for name in names:
        assert name in lines[0], err


def _cli(capsys, *argv: str):
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture
def deb_project(tmp_path, monkeypatch):
    """A board without qemu (so no kernel) and a cache of its own (so no shared state)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "board.toml").write_text('arch = "arm64"\n')
    monkeypatch.setenv("LXEMBED_CACHE", str(tmp_path / "cache"))
    return project


def _build_deb(capsys, project, deb_bytes: bytes, name: str):
    (project / name).write_bytes(deb_bytes)
    recipe = project / "recipe.toml"
    recipe.write_text(f'debs = ["{name}"]\n')
    return _cli(capsys, "-q", "build", "-b", str(project / "board.toml"), "-r", str(recipe),
                "-f", "tar", "-o", str(project / "out"))


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_intact_synthetic_deb_builds_without_network(capsys, deb_project, kind):
    members = _deb_members(kind)
    code, err = _build_deb(capsys, deb_project, _ar(members), "ok.deb")
    assert code == 0, err
    with tarfile.open(deb_project / "out" / "rootfs.tar") as tar:
        assert tar.extractfile("./opt/hello.txt").read() == b"hello\n"
    assert not list((deb_project / "cache").rglob("*_Packages*"))  # apt never ran


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_damaged_deb_in_recipe_is_one_line(capsys, deb_project, kind, how):
    name = f"damaged-{kind}-{how}.deb"
    damaged = _damage(_deb_members(kind), how)
    code, err = _build_deb(capsys, deb_project, damaged, name)
    _one_error_line(code, err, name)
    # Nothing written beside the inputs: no output, no stage directory left behind.
    assert sorted(os.listdir(deb_project)) == ["board.toml", name, "recipe.toml"]


def test_damaged_deb_through_the_real_command_line(tmp_path):
    (tmp_path / "board.toml").write_text('arch = "arm64"\n')
    deb = tmp_path / "cut.deb"
    deb.write_bytes(_damage(_deb_members("xz"), "stream-cut-inside-ar"))
    (tmp_path / "r.toml").write_text('debs = ["cut.deb"]\n')
    result = run_lxembed("build", "-b", str(tmp_path / "board.toml"), "-r",
                         str(tmp_path / "r.toml"), "-o", str(tmp_path / "out"),
                         env=dict(os.environ, LXEMBED_CACHE=str(tmp_path / "cache")))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    error = [ln for ln in result.stderr.splitlines() if ln.startswith("lxembed: error: ")]
    assert len(error) == 1 and "cut.deb" in error[0] and "truncated" in error[0], result.stderr
    assert not (tmp_path / "out").exists()


# -- images for `inspect` ----------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _image(fmt: str) -> bytes:
    tree = RootfsTree()
    tree.mkdir("/etc")
    tree.write("/etc/hostname", b"corpus\n")
    tree.write("/usr/share/noise.bin", random.Random(1).randbytes(60_000))
    tree.write("/usr/share/text.txt", b"lxembed corpus line\n" * 2000)
    tree.symlink("/bin/sh", "busybox")
    buf = io.BytesIO()
    (write_tar if fmt == "tar" else write_cpio)(tree, buf)
    return buf.getvalue()


def _cut(fmt: str, kind: str, where) -> bytes:
    """The image cut at a fraction of its length, or ("tail") without its last 2 bytes: the
    end of the compressed stream, while the archive inside may be whole."""
    data = _compress(_image(fmt), kind)
    return data[:-2] if where == "tail" else data[:int(len(data) * where)]


IMAGE_CASES = [
    pytest.param(f"image.{fmt}{'.' + kind if kind else ''}", _cut, (fmt, kind, where),
                 id=f"{fmt}{'.' + kind if kind else ''}-cut-{where}")
    for fmt in ("tar", "cpio") for kind in ("", "gz", "zst", "xz")
    for where in (0.3, 0.6, 0.9) + (("tail",) if kind else ())
]


def _garbage(kind: str) -> bytes:
    noise = random.Random(kind).randbytes(4096)
    if kind == "random":
        return noise
    if kind == "zeros":
        return bytes(4096)
    magic = {"gz": b"\x1f\x8b", "zst": b"\x28\xb5\x2f\xfd", "xz": b"\xfd7zXZ\x00"}[kind]
    return magic + noise  # a compression magic followed by noise


IMAGE_CASES += [
    pytest.param(f"garbage.{kind}", _garbage, (kind,), id=f"garbage-{kind}")
    for kind in ("random", "zeros", "gz", "zst", "xz")
]
IMAGE_CASES += [pytest.param("empty.img", lambda: b"", (), id="empty")]


@pytest.mark.parametrize("name, make, args", IMAGE_CASES)
def test_damaged_image_inspect_is_one_line(capsys, tmp_path, name, make, args):
    (tmp_path / name).write_bytes(make(*args))
    code, err = _cli(capsys, "inspect", str(tmp_path / name))
    _one_error_line(code, err, name)
    assert os.listdir(tmp_path) == [name]


def test_whole_images_of_the_corpus_read(capsys, tmp_path):
    """The control: the same images, not damaged, inspect cleanly."""
    for fmt in ("tar", "cpio"):
        for kind in ("", "gz", "zst", "xz"):
            path = tmp_path / f"ok.{fmt}.{kind}"
            path.write_bytes(_compress(_image(fmt), kind))
            code, err = _cli(capsys, "inspect", "--json", str(path))
            assert code == 0, err


@pytest.mark.parametrize("path", ["no-such-image.cpio", "no-such-dir/", "no-such-dir/x.tar"])
def test_missing_image_is_one_line(capsys, tmp_path, path):
    code, err = _cli(capsys, "inspect", str(tmp_path / path))
    _one_error_line(code, err, "no-such-")


def test_inspect_of_a_fifo_is_refused_not_read_forever(capsys, tmp_path):
    os.mkfifo(tmp_path / "pipe")
    code, err = _cli(capsys, "inspect", str(tmp_path / "pipe"))
    _one_error_line(code, err, "pipe: not a regular file or directory")


def test_inspect_through_the_real_command_line(tmp_path):
    (tmp_path / "cut.cpio.zst").write_bytes(_cut("cpio", "zst", 0.5))
    result = run_lxembed("inspect", str(tmp_path / "cut.cpio.zst"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("lxembed: error: ") and "cut.cpio.zst" in result.stderr


# -- the architecture table and the host ------------------------------------------------------
@pytest.mark.parametrize("command", ["ldd", "inspect"])
def test_unknown_arch_lists_the_known_ones(capsys, tmp_path, command):
    code, err = _cli(capsys, command, "--arch", "foo", str(tmp_path))
    _one_error_line(code, err, "unknown architecture 'foo'", "arm64", "mips64el")


@pytest.mark.parametrize("machine", ["riscv64", "armv8l", "ppc64le"])
def test_unknown_host_machine_is_refused(capsys, tmp_path, monkeypatch, machine):
    """A bind-host container needs the host's architecture: it was taken for amd64."""
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setenv("LXEMBED_CACHE", str(tmp_path / "cache"))
    code, err = _cli(capsys, "-q", "build", "-b", "qemu-x86_64", "-r", "container-bind",
                     "-f", "lxc", "-o", str(tmp_path / "out"))
    _one_error_line(code, err, f"host machine {machine!r}: not supported")
    assert not (tmp_path / "out").exists()


def test_no_apt_get_on_path_says_install_apt(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("LXEMBED_CACHE", str(tmp_path / "cache"))
    code, err = _cli(capsys, "-q", "build", "-b", "qemu-arm64", "-r", "busybox",
                     "-o", str(tmp_path / "out"))
    _one_error_line(code, err, "apt-get: not found")
    assert "lxembed: hint: install apt" in err
    assert not (tmp_path / "out").exists()


# -- the download cache's record of verified files -------------------------------------------------
def test_verified_files_hash_once_and_see_any_change(tmp_path, monkeypatch):
    archives = tmp_path / "archives"
    archives.mkdir()
    deb = archives / "x_1_arm64.deb"
    deb.write_bytes(b"a whole package\n" * 1000)
    digest, size = hashlib.sha256(deb.read_bytes()).hexdigest(), deb.stat().st_size
    record = VerifiedFiles(tmp_path / "verified.json", archives)
    assert record.matches(deb, digest, size)
    record.save()
    hashed = []
    real = apt_module._file_sha256
    monkeypatch.setattr(apt_module, "_file_sha256", lambda p: hashed.append(p) or real(p))
    again = VerifiedFiles(tmp_path / "verified.json", archives)
    assert again.matches(deb, digest, size) and not hashed  # unchanged: not read again
    data = bytearray(deb.read_bytes())
    data[100] ^= 1  # same size, written in place
    with open(deb, "r+b") as fh:
        fh.write(data)
    assert not again.matches(deb, digest, size) and hashed == [deb]
    assert not again.matches(deb, digest, size + 1)  # a size that differs needs no hashing
    deb.unlink()
    assert not again.matches(deb, digest, size)


def test_a_damaged_unpacked_kernel_is_unpacked_again(tmp_path):
    root = tmp_path / "linux-image-6.1.0-1-arm64_6.1.1-1_arm64"
    (root / "boot").mkdir(parents=True)
    (root / "lib/modules/6.1.0-1-arm64").mkdir(parents=True)
    (root / "boot/vmlinuz-6.1.0-1-arm64").write_bytes(b"kernel")
    pin = {"package": "linux-image-6.1.0-1-arm64", "version": "6.1.1-1", "meta": "m",
           "arch": "arm64", "release": "6.1.0-1-arm64", "image": "boot/vmlinuz-6.1.0-1-arm64",
           "vmlinux": None}
    (root / "kernel.json").write_text(json.dumps(pin))
    assert unpacked_pin(root) == pin
    (root / "kernel.json").write_text(json.dumps(pin)[:20])  # cut short
    assert unpacked_pin(root) is None
    (root / "kernel.json").write_text(json.dumps(pin))
    (root / "boot/vmlinuz-6.1.0-1-arm64").unlink()
    assert unpacked_pin(root) is None


# -- the decompression module ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_every_cut_of_a_compressed_stream_is_refused(kind):
    data = random.Random(3).randbytes(3000) + b"text " * 2000
    packed = _compress(data, kind)
    assert decompress(packed, kind, "x") == data
    for cut in range(len(packed)):
        with pytest.raises(UserError, match=f"^x: the {kind} compressed data"):
            decompress(packed[:cut], kind, "x")


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_concatenated_streams_read_as_one(kind):
    """As gzip, xz and zstd read them (gzip members, xz streams with padding, zstd frames)."""
    first, second = b"first\n" * 500, b"second\n" * 500
    padding = b"\0" * 4 if kind == "xz" else b""
    packed = _compress(first, kind) + padding + _compress(second, kind)
    assert decompress(packed, kind, "x") == first + second
    assert kind_by_magic(packed) == kind and kind_by_name(f"data.tar.{kind}") == kind


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_a_bit_flipped_anywhere_is_a_user_error_or_harmless(tmp_path, kind):
    """Flips across the whole .deb, headers included: the reader refuses with a UserError or
    (where nothing can tell: ar dates, owners, the control member) reads the package; it never
    raises anything else, loops or hangs."""
    whole = _ar(_deb_members(kind))
    positions = sorted(set(range(0, len(whole), len(whole) // 60)) | set(range(0, 140, 3)))
    path = tmp_path / "flipped.deb"
    refused = 0
    for position in positions:
        damaged = bytearray(whole)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            extract_deb(path, RootfsTree())
        except UserError as err:
            assert str(err).startswith(str(path)), err
            refused += 1
    assert refused > len(positions) // 2


@pytest.mark.parametrize("fmt", ["tar", "cpio"])
@pytest.mark.parametrize("kind", ["", "gz"])
def test_an_image_with_a_bit_flipped_anywhere_reads_or_is_refused(tmp_path, fmt, kind):
    """Raw archives cannot tell a flip in file data, so reading is allowed; anything else than
    a UserError naming the image (a traceback, a hang) is not."""
    whole = _compress(_image(fmt), kind)
    path = tmp_path / f"flipped.{fmt}"
    for position in range(0, len(whole), len(whole) // 100):
        damaged = bytearray(whole)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            read_image(path)
        except UserError as err:
            assert str(err).startswith(str(path)), err


def test_a_damaged_tar_header_is_refused_not_read_as_the_end(tmp_path):
    """tarfile stops quietly at a header whose checksum fails: the rest of the image was lost."""
    data = bytearray(_image("tar"))
    second = data.index(b"etc/hostname")  # a later member's header, by its name
    data[second] ^= 0x01
    (tmp_path / "image.tar").write_bytes(bytes(data))
    with pytest.raises(UserError, match="image.tar: corrupt tar archive"):
        read_image(tmp_path / "image.tar")
