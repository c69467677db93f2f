"""Shared test helpers: run the real CLI, make small .deb files."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_lxembed(*args: str, check: bool = False, env: dict = None,
                cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "lxembed", *args], capture_output=True,
                            text=True, cwd=cwd, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"lxembed {' '.join(args)} failed:\n{result.stderr}")
    return result


HOST_BOARD = 'arch = "amd64"\nsuite = "bookworm"\n'  # a board file the build tests write


def build_cli(tmp_path: Path, recipe: str, board: str = HOST_BOARD, fmt: str = "lxc"):
    """`lxembed build` of a recipe text on a board text, as a user runs it (in process):
    (exit code, output dir)."""
    from lxembed.cli import main
    (tmp_path / "b.toml").write_text(board)
    (tmp_path / "bad.toml").write_text(recipe)
    out = tmp_path / "out"
    code = main(["-q", "build", "-b", str(tmp_path / "b.toml"), "-r", str(tmp_path / "bad.toml"),
                 "-o", str(out), "-f", fmt])
    return code, out


def wait_for(predicate, timeout: float, step: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; its last answer."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def make_deb(path: Path, entries) -> Path:
    """Write a .deb (ar: debian-binary, control.tar.gz, data.tar.gz) with raw tar entries.

    `entries` are (name, kind, payload): kind "file" (payload bytes), "dir", "symlink" (target).
    Names are written as given, so a test can put '../' in them.
    """
    data = []
    for name, kind, payload in entries:
        info = tarfile.TarInfo(name)
        info.mtime = 1700000000
        if kind == "file":
            info.size, info.mode = len(payload), 0o644
            data.append((info, payload))
        elif kind == "dir":
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            data.append((info, None))
        elif kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, payload
            data.append((info, None))
    control = b"Package: test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n" \
              b"Description: test\n"
    cinfo = tarfile.TarInfo("./control")
    cinfo.size = len(control)
    return write_ar(path, [("debian-binary", b"2.0\n"),
                           ("control.tar.gz", _tar([(cinfo, control)])),
                           ("data.tar.gz", _tar(data))])


def write_ar(path: Path, members) -> Path:
    """An ar archive (a .deb's container) of (name, bytes) members, in order."""
    out = bytearray(b"!<arch>\n")
    for name, blob in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode()
        out += blob + (b"\n" if len(blob) % 2 else b"")
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def cli():
    return run_lxembed


@pytest.fixture
def start_init(tmp_path):
    """start_init(config, env=None, ...) -> InitProcess (tests/init_helpers.py); everything it
    left is killed after the test."""
    from init_helpers import InitProcess
    started = []

    def start(config, **kwargs):
        init = InitProcess(tmp_path, config, **kwargs)
        started.append(init)
        return init

    yield start
    for init in started:
        init.cleanup()


def make_key(keydir: Path) -> None:
    """A throwaway RSA key pair in KEYDIR/NAME.key, KEYDIR/NAME.crt (NAME: the directory)."""
    keydir.mkdir(parents=True)
    name = keydir.name
    subprocess.run(["openssl", "req", "-batch", "-new", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", str(keydir / f"{name}.key"),
                    "-out", str(keydir / f"{name}.crt"), "-subj", f"/CN={name}",
                    "-days", "3650"], check=True, capture_output=True)


# A firmware recipe for the firmware tests (keys/dev made with make_key beside it).
FIRMWARE_RECIPE = """base = "busybox-python"
description = "firmware test"

[fit]
key = "keys/dev"

[firmware]
version = "1.0"
key = "keys/dev"
slot_size = "160MiB"
data_size = "16MiB"
tries = 2
trial_timeout = 120
"""
