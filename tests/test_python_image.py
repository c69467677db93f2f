"""Images with the Python init: a cut-down CPython for the target arch that really runs it."""

from __future__ import annotations

import ast
import json
import signal
import subprocess

import pytest
from conftest import run_lxembed

from lxembed.config import load_board
from lxembed.suites import get_suite

pytestmark = pytest.mark.slow


def python_of(board: str) -> str:
    """The board's suite's python3.X: 3.11 in bookworm, 3.13 in trixie (qemu-riscv64)."""
    return get_suite(load_board(board).suite).python


@pytest.fixture(scope="module", params=["qemu-arm64", "qemu-mipsel", "qemu-riscv64"])
def image(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    result = run_lxembed("build", "-b", request.param, "-r", "busybox-python", "-o", str(out),
                         "-f", "cpio.zst,dir", "--json", check=True)
    return request.param, out, json.loads(result.stdout)


def test_only_what_the_init_loads(image):
    board, out, _ = image
    py = python_of(board)
    manifest = json.loads((out / "manifest.json").read_text())
    paths = {e["path"] for e in manifest["entries"]}
    assert f"/usr/bin/python{py}" in paths and "/usr/lib/lxembed/lxinit.pyc" in paths
    stdlib = [p for p in paths if p.startswith(f"/usr/lib/python{py}/")]
    assert not [p for p in stdlib if p.endswith(".py")], "stdlib must be sourceless .pyc"
    # The init calls libc through _ctypes alone: the ctypes package (and the struct and types
    # it imports) costs boot time and is left out; the C modules it does use are there.
    dynload = {p.rsplit("/", 1)[1].split(".")[0] for p in stdlib if "/lib-dynload/" in p}
    # Debian's python3.13 has _json built in.
    assert dynload == ({"_ctypes", "_json"} if py == "3.11" else {"_ctypes"}), dynload
    assert not any("/ctypes/" in p or p.endswith(("/struct.pyc", "/types.pyc")) for p in stdlib)
    assert not any("/asyncio/" in p or "/email/" in p or "/unittest/" in p for p in stdlib)
    encodings = {p.rsplit("/", 1)[1] for p in stdlib if "/encodings/" in p}
    assert encodings == {"__init__.pyc", "aliases.pyc", "utf_8.pyc"}, encodings
    config = json.loads((out / "rootfs/etc/lxembed/init.json").read_text())
    assert config["network"]["interfaces"][0] == {"name": "eth0", "dhcp": True}


def test_init_bytecode_is_optimized(image):
    """The init is compiled as -OO (no docstrings, no asserts): it must not need either."""

    from lxembed.rootfs.python_init import INIT_SOURCE

    tree = ast.parse(INIT_SOURCE.read_text())
    asserts = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    docs = [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr == "__doc__"]
    assert not asserts and not docs, (asserts, docs)
    _, out, _ = image
    data = (out / "rootfs/usr/lib/lxembed/lxinit.pyc").read_bytes()
    assert b"Run as ``python3 -I -S lxinit.py" not in data  # the module docstring is gone


def test_init_runs_under_qemu_user(image, tmp_path):
    board, out, _ = image
    arch = load_board(board).arch
    root = out / "rootfs"
    config = tmp_path / "init.json"
    config.write_text(json.dumps({"services": [
        {"name": "hello", "type": "oneshot",
         "command": ["/bin/busybox", "echo", "hello from busybox"]}],
        "ready_file": None, "log_dir": None}))
    python = str(root / f"usr/bin/python{python_of(board)}")
    proc = subprocess.Popen([arch.qemu_user_path, "-L", str(root), python,
                             "-IS", str(root / "sbin/init")],
                            env={"LXINIT_CONFIG": str(config), "PATH": "/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for raw in proc.stdout:
        lines.append(raw.decode(errors="replace"))
        if "ready" in lines[-1]:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    log = "".join(lines) + rest.decode(errors="replace")
    assert "lxembed-init: ready" in log, log
    assert proc.returncode == 0, log
    assert "hello from busybox" in log, log  # the service ran before ready


def test_image_size(image):
    board, _, info = image
    cpio = next(a for a in info["artifacts"] if a["format"] == "cpio.zst")
    # Measured in benchmarks/init.py; this bound only catches a regression (stdlib creeping in).
    assert cpio["bytes"] < 4_600_000, (board, cpio["bytes"])


def test_encodings_are_the_images_own(image, tmp_path):
    """encodings.aliases keeps the names of the codecs shipped (utf_8) and nothing else; the
    codecs Python looks up at start and the C fast paths (ascii, latin-1) still work."""
    board, out, _ = image
    arch = load_board(board).arch
    root = out / "rootfs"
    code = ("import codecs, encodings.aliases as a\n"
            "print(sorted(set(a.aliases.values())), len(a.aliases))\n"
            "print(codecs.lookup('utf8').name, codecs.lookup('U8').name)\n"
            "print('é'.encode('latin-1'), 'x'.encode('ascii'))\n"
            "try:\n    codecs.lookup('cp1252')\nexcept LookupError:\n    print('no cp1252')\n")
    # A script, not -c: python3.13 keeps a -c command's source in linecache, not in the image.
    script = tmp_path / "encodings_check.py"
    script.write_text(code)
    result = subprocess.run([arch.qemu_user_path, "-L", str(root),
                             str(root / f"usr/bin/python{python_of(board)}"), "-IS", str(script)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['utf_8'] 6", "utf-8 utf-8", "b'\\xe9' b'x'", "no cp1252"], result.stdout
