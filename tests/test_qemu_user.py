"""qemu-user: the standard checks pass in every board's busybox image, real hardware included.

No kernel boots: each check runs in the image tree through a binfmt_misc handler for the
board's qemu-user binary (the host's own arch natively). Fast once the package cache is warm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lxembed.config import list_boards, load_board

ROOT = Path(__file__).resolve().parents[1]
BOARDS = list_boards()

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="qemu-user checks need root")


def lxembed(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "lxembed", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize("board", BOARDS)
def test_user_checks_pass(board, tmp_path):
    proc = lxembed("test", "--user", "-b", board, "-r", "busybox", "--json", "-o", str(tmp_path))
    assert proc.stdout.strip().startswith("{"), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and report["ok"], (failed, proc.stderr[-2000:])
    names = {c["name"] for c in report["checks"]}
    assert {"uname-arch", "proc-mounted", "busybox-applets", "pipe-md5sum"} <= names
    # Checks that need the image's own kernel are left to qemu-system.
    assert "eth0-address" not in names
    uname = next(c for c in report["checks"] if c["name"] == "uname-arch")
    assert uname["output"] in load_board(board).arch.uname


def test_user_run_leaves_image_and_binfmt_unchanged(tmp_path):
    board = "rpi3-arm64"
    first = lxembed("test", "--user", "-b", board, "-r", "busybox", "-o", str(tmp_path))
    assert first.returncode == 0, first.stdout + first.stderr
    rootfs = tmp_path / "rootfs"
    before = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    again = lxembed("test", "--user", "-b", board, "-r", "busybox", "-o", str(tmp_path))
    assert again.returncode == 0
    # /tmp writes and /dev nodes lived in the sandbox's own mounts, not in the image.
    assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*")) == before
    # Each run removed its binfmt handler (named lxembed-PID-...; PIDs of live runs may remain).
    handlers = [p.name for p in Path("/proc/sys/fs/binfmt_misc").glob("lxembed-*")]
    dead = [n for n in handlers if not Path(f"/proc/{n.split('-')[1]}").exists()]
    assert not dead


def test_recipe_check_with_user_false_is_skipped(tmp_path):
    recipe = tmp_path / "withchecks.toml"
    recipe.write_text(
        'base = "busybox"\n\n[[checks]]\nname = "echo"\ncommand = "echo ok"\n'
        'expect = "^ok$"\n\n[[checks]]\nname = "kernel-only"\ncommand = "false"\n'
        "user = false\n"
    )
    proc = lxembed(
        "test",
        "--user",
        "-b",
        "qemu-armel",
        "-r",
        str(recipe),
        "--json",
        "-o",
        str(tmp_path / "out"),
    )
    report = json.loads(proc.stdout)
    names = [c["name"] for c in report["checks"]]
    assert "echo" in names and "kernel-only" not in names
    assert proc.returncode == 0, proc.stderr
