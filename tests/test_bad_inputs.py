"""A corpus of mistakes a user can make: each ends as one line `lxembed: error: ...`, exit 2,
no traceback, nothing written outside the output and the previous output intact.

Builds here use a hardware board (no kernel modules) and a recipe made only of a local .deb,
so no case needs the network: the corpus runs in the quick subset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_deb

BOARD = "mt7621-router"  # real hardware only: a build fetches no kernel


def _snapshot(root: Path) -> dict:
    """Every path under root with its bytes (files) or link target: what "nothing lost" means."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isfile(p):
                out[rel] = ("file", Path(p).read_bytes())
            else:
                out[rel] = ("dir", oct(os.lstat(p).st_mode))
    return out


def _lxembed(*args, cwd=ROOT, wrap=()):
    return subprocess.run([*wrap, sys.executable, "-m", "lxembed", *args], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("lxembed: error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def work(tmp_path):
    """A recipe of one small local .deb, and a previous good build in out/."""
    make_deb(tmp_path / "data.deb", [("./opt/", "dir", None),
                                     ("./opt/blob", "file", os.urandom(200_000))])
    (tmp_path / "r.toml").write_text('description = "corpus"\ndebs = ["data.deb"]\n')
    result = _lxembed("build", "-b", BOARD, "-r", str(tmp_path / "r.toml"),
                      "-o", str(tmp_path / "out"), "-f", "tar,dir")
    assert result.returncode == 0, result.stderr
    return tmp_path


def _build(work: Path, recipe: str, output: str = "out", *extra, wrap=()):
    return _lxembed("build", "-b", BOARD, "-r", recipe, "-o", output, *extra, cwd=work,
                    wrap=wrap)


# -- recipe and board files -----------------------------------------------------------------------
RECIPES = {
    "latin-1": ('debs = ["data.deb"]\ndescription = "café"\n'.encode("latin-1"), "not UTF-8"),
    "utf-16": ('debs = ["data.deb"]\n'.encode("utf-16"), "not UTF-8 text (UTF-16)"),
    "binary": (b"\x00\x01\x02\xff\xfe", "not UTF-8"),
    "empty-key": (b'= "x"\n', "invalid TOML"),
    "dotdot-file": (b'debs = ["data.deb"]\nfiles = {"/../etc/passwd" = "x"}\n', ".."),
    "missing-deb": (b'debs = ["../../no/such.deb"]\n', "no such .deb file"),
    "deb-is-dir": (b'debs = ["."]\n', "no such .deb file"),
    "file-over-dir": (b'debs = ["data.deb"]\nfiles = {"/opt" = "x"}\n',
                      "/opt is a directory with content"),
    "files-not-string": (b'debs = ["data.deb"]\nfiles = {"/a" = 1}\n', "must be a string"),
    "bad-base": (b'base = "no-such-recipe"\n', "unknown recipe 'no-such-recipe'"),
    "self-base": (b'base = "./r-self-base.toml"\n', "loop"),
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_bad_recipe(work, case):
    data, needle = RECIPES[case]
    recipe = work / f"r-{case}.toml"
    recipe.write_bytes(data)
    before = _snapshot(work)
    line = assert_one_line_error(_build(work, str(recipe)), needle)
    assert str(recipe) in line or "recipe" in line
    assert _snapshot(work) == before


@pytest.mark.parametrize("board, needle", [
    ("/etc/passwd", "invalid TOML"),
    ("/nonexistent/b.toml", "does not exist"),
    ("qemu-vax", "unknown board 'qemu-vax'"),
])
def test_bad_board(work, board, needle):
    before = _snapshot(work)
    result = _lxembed("build", "-b", board, "-r", str(work / "r.toml"), "-o", "out", cwd=work)
    assert_one_line_error(result, needle)
    assert _snapshot(work) == before


# -- output paths ---------------------------------------------------------------------------------
def test_output_is_an_existing_file(work):
    (work / "afile").write_text("mine\n")
    before = _snapshot(work)
    assert_one_line_error(_build(work, "r.toml", "afile"), "afile: exists and is not a directory")
    assert _snapshot(work) == before


def test_output_under_a_file(work):
    (work / "afile").write_text("mine\n")
    before = _snapshot(work)
    assert_one_line_error(_build(work, "r.toml", "afile/sub/out"), "afile is not a directory")
    assert _snapshot(work) == before


def test_output_is_a_directory_lxembed_did_not_write(work):
    (work / "home").mkdir()
    (work / "home" / "notes.txt").write_text("precious\n")
    before = _snapshot(work)
    assert_one_line_error(_build(work, "r.toml", "home"), "a directory lxembed did not write")
    assert _snapshot(work) == before


def test_output_is_a_symlink(work):
    os.symlink("out", work / "link")
    before = _snapshot(work)
    assert_one_line_error(_build(work, "r.toml", "link"), "exists and is not a directory")
    assert _snapshot(work) == before


def test_unknown_format_is_refused_before_building(work):
    before = _snapshot(work)
    assert_one_line_error(_build(work, "r.toml", "out", "-f", "tar,ext5"), "unknown format ext5")
    assert _snapshot(work) == before


needs_mounts = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                  reason="needs root for a private mount namespace")


def _in_tmpfs(work: Path, options: str, prepare: str = "") -> tuple:
    """Run a build whose output directory sits on a fresh tmpfs in a private mount namespace."""
    script = (f"set -e; mount -t tmpfs -o {options} none {work}/mnt; {prepare}"
              f" exec \"$@\"")
    (work / "mnt").mkdir()
    return ("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh")


@needs_mounts
def test_output_directory_not_writable(work):
    wrap = _in_tmpfs(work, "ro,size=1m")
    result = _build(work, "r.toml", "mnt/out", wrap=wrap)
    assert_one_line_error(result, "mnt")


@needs_mounts
def test_disk_fills_up_while_writing_keeps_the_previous_output(work):
    # On a 420 KB tmpfs a tar build (~250 KB) fits; tar + dir (twice that) does not.
    lx = f"{sys.executable} -m lxembed -q build -b {BOARD} -r r.toml -o mnt/out"
    script = (f"mount -t tmpfs -o size=420k none mnt || exit 99;"
              f" {lx} -f tar >/dev/null || exit 98;"
              " sha256sum mnt/out/* mnt/out/.l*; echo ===;"
              f" {lx} -f tar,dir >/dev/null; echo status=$?; echo ===;"
              " sha256sum mnt/out/* mnt/out/.l*; ls -A mnt")
    (work / "mnt").mkdir()
    run = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, cwd=work,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    before, status, after = run.stdout.split("===\n")
    assert status.strip() == "status=2", run.stdout + run.stderr
    line = assert_one_line_error(subprocess.CompletedProcess([], 2, "", run.stderr),
                                 "No space left on device")
    assert "previous output is unchanged" in line
    assert after.splitlines()[:-1] == before.splitlines()  # the first build, byte for byte
    assert after.splitlines()[-1] == "out"  # and no staging directory left behind


def test_last_format_failing_leaves_the_previous_build_byte_for_byte(work):
    # mksquashfs that fails, first on PATH: tar and dir are written, then the last format fails.
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "mksquashfs").write_text("#!/bin/sh\necho 'injected failure' >&2\nexit 1\n")
    (bin_dir / "mksquashfs").chmod(0o755)
    before = _snapshot(work)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{bin_dir}:{os.environ['PATH']}")
    (work / "r.toml").write_text('debs = ["data.deb"]\nfiles = {"/etc/motd" = "new"}\n')
    before["r.toml"] = ("file", (work / "r.toml").read_bytes())
    result = subprocess.run([sys.executable, "-m", "lxembed", "build", "-b", BOARD, "-r", "r.toml",
                             "-o", "out", "-f", "tar,dir,squashfs"], capture_output=True,
                            text=True, cwd=work, env=env)
    assert_one_line_error(result, "mksquashfs failed", "injected failure")
    assert _snapshot(work) == before
