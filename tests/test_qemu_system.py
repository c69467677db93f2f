"""qemu-system: every qemu board boots `busybox` to ready, passes its checks and powers off.

Each board boots once (a module-scoped fixture runs `lxembed test --json` for all of them);
the tests assert on those results. The fast tests at the end need no qemu: they drive the
console protocol against a local shell and check the qemu command line and modules.dep.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from lxembed.arch import get_arch
from lxembed.config import list_boards, load_board
from lxembed.rootfs.modules import modules_dep
from lxembed.runners.accel import choose_accel, kvm_usable
from lxembed.runners.console import SerialConsole
from lxembed.sources.kernel_modules import Module

ROOT = Path(__file__).resolve().parents[1]
QEMU_BOARDS = [b for b in list_boards() if load_board(b).qemu is not None]
HUNG_TIMEOUT = 10.0


def lxembed(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "lxembed", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def _have_qemu(board: str) -> bool:
    return shutil.which(load_board(board).arch.qemu_system_path) is not None


@pytest.fixture(scope="module")
def boots(tmp_path_factory):
    """Board name -> (exit status, report, stderr, seconds) of one `lxembed test` each."""
    results = {}
    for board in QEMU_BOARDS:
        if not _have_qemu(board):
            continue
        out = tmp_path_factory.mktemp(board)
        start = time.monotonic()
        proc = lxembed("test", "-b", board, "-r", "busybox", "--json", "-o", str(out))
        report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
        results[board] = (proc.returncode, report, proc.stderr, time.monotonic() - start)
    return results


def _result(boots, board):
    if board not in boots:
        pytest.skip(f"qemu-system for {board} is not installed")
    status, report, stderr, _ = boots[board]
    assert report is not None, f"no JSON report from lxembed test:\n{stderr[-3000:]}"
    return status, report, stderr


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_board_boots_to_ready_and_passes_checks(boots, board):
    status, report, stderr = _result(boots, board)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert status == 0 and report["ok"], (
        f"{board}: {report['error']} failed={failed}\n{stderr[-3000:]}\n"
        + Path(report["console_log"]).read_text(errors="replace")[-3000:]
    )
    assert report["board"] == board and report["recipe"] == "busybox"
    assert report["accel"] in ("kvm", "tcg")
    assert 0 < report["boot_seconds"] < 60
    assert report["guest_uptime"] and report["guest_uptime"] > 0
    assert report["kernel"]["package"].startswith("linux-image-")


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_board_standard_checks(boots, board):
    _, report, _ = _result(boots, board)
    checks = {c["name"]: c for c in report["checks"]}
    # A board whose qemu machine has no NIC (raspi3b: nic = "none") skips the network checks.
    network = load_board(board).qemu.get("nic") != "none"
    names = ["uname-arch", "proc-mounted", "busybox-applets", "pipe-md5sum", "modules-loaded"]
    for name in names + (["eth0-address"] if network else []):
        assert checks[name]["ok"], checks[name]
    assert checks["uname-arch"]["output"] in load_board(board).arch.uname
    if network:
        assert re.search(r"inet 10\.0\.2\.15/24", checks["eth0-address"]["output"])
    else:
        assert "eth0-address" not in checks


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_board_powers_off(boots, board):
    _, report, _ = _result(boots, board)
    # A guest that does not power off is killed and reported as an error.
    assert "power off" not in report["error"]
    log = Path(report["console_log"]).read_text(errors="replace")
    assert "reboot: Power down" in log


@pytest.mark.slow
@pytest.mark.qemu
def test_hung_guest_fails_within_timeout_with_console_log(tmp_path):
    board = "qemu-arm64"
    if not _have_qemu(board):
        pytest.skip("qemu-system-aarch64 is not installed")
    recipe = tmp_path / "hung.toml"
    recipe.write_text(
        'description = "an init that never gets ready"\nbase = "busybox"\n\n'
        '[files]\n"/etc/init.d/rcS" = "#!/bin/sh\\necho rcS: waiting forever\\n'
        'exec sleep 100000\\n"\n'
    )
    start = time.monotonic()
    proc = lxembed(
        "test",
        "-b",
        board,
        "-r",
        str(recipe),
        "--timeout",
        str(HUNG_TIMEOUT),
        "-o",
        str(tmp_path / "out"),
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert elapsed < HUNG_TIMEOUT + 30, elapsed  # build + kill: no wait beyond the timeout
    assert "did not print the ready marker" in proc.stderr
    assert "hung guest killed" in proc.stderr
    assert "rcS: waiting forever" in proc.stderr  # the console log's tail is shown
    assert (tmp_path / "out" / "console.log").exists()


# -- fast tests: no qemu ------------------------------------------------------------------------


def test_console_runs_commands_and_reads_status_through_sentinels():
    # A shell on a pty, like the guest's console: it echoes what is typed, ^C interrupts.
    master, slave = os.openpty()
    shell = subprocess.Popen(
        ["sh", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={"PS1": "$ ", "PATH": os.defpath},
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    try:
        console = SerialConsole(master, master)
        console.sync(5)
        assert console.run("echo hello", 5) == (0, "hello")
        assert console.run("printf 'no newline'", 5) == (0, "no newline")
        assert console.run("echo out; exit 3", 5) == (3, "out")  # a subshell: shell survives
        assert console.run("echo x # a comment", 5) == (0, "x")
        assert console.run("if true; then\n  echo multi\nfi", 5) == (0, "multi")
        status, _ = console.run("sleep 30", 1)
        assert status is None  # timed out, interrupted with ^C
        assert console.run("echo after", 5) == (0, "after")
    finally:
        shell.kill()
        shell.wait()
        os.close(master)


def test_accel_uses_tcg_for_foreign_arches_and_a_software_kvm():
    assert choose_accel(get_arch("mipsel")).name == "tcg"
    assert choose_accel(get_arch("arm64"), "tcg").scale > 1
    usable, reason = kvm_usable(get_arch("amd64"))
    flags = Path("/proc/cpuinfo").read_text()
    if not re.search(r"\b(vmx|svm)\b", flags):
        assert not usable and reason


def test_modules_dep_lists_dependencies_in_reverse_load_order():
    def mod(name, *deps):
        return Module(name, f"kernel/{name}.ko", b"", deps, ())

    mods = [
        mod("virtio_ring"),
        mod("virtio", "virtio_ring"),
        mod("virtio_pci", "virtio", "virtio_ring"),
        mod("virtio_net", "virtio"),
    ]
    lines = dict(line.split(":") for line in modules_dep(mods).splitlines())
    # busybox modprobe loads a line's dependencies from the end: virtio_ring first.
    assert lines["kernel/virtio_pci.ko"].split() == ["kernel/virtio.ko", "kernel/virtio_ring.ko"]
    assert lines["kernel/virtio_net.ko"].split() == ["kernel/virtio.ko", "kernel/virtio_ring.ko"]
    assert lines["kernel/virtio_ring.ko"] == ""
