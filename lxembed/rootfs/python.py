"""CPython for the target arch, cut down to what the lxembed init really loads.

The module set is measured, not listed by hand: the init runs under qemu-user inside the full
Python tree with `-X importtime`, which names every module it imports. Those modules are kept
as sourceless, hash-based .pyc files (no compile at boot, no mtime in the image); the
interpreter and extension modules come with their exact ELF closure (lxembed.elf.pick).
"""

from __future__ import annotations

import _imp
import ast
import hashlib
import importlib.util
import json
import marshal
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

from ..arch import Arch
from ..config import Plan
from ..elf.pick import pick_files
from ..errors import UserError
from ..paths import cache_dir
from ..sources.apt import PackageSource
from ..sources.unpacked import add_packages
from ..tree import RootfsTree
from ..writers.directory import write_dir
from .emulate import qemu_user_argv

PYTHON_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib")
PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
ALIASES = f"{STDLIB}/encodings/aliases.py"
_IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s+(\S+)\s*$")


def python_tree(source: PackageSource) -> RootfsTree:
    tree = RootfsTree()
    add_packages(source.fetch(list(PYTHON_PACKAGES)), tree)
    return tree


def probe_imports(full: RootfsTree, arch: Arch, init_source: bytes) -> List[str]:
    """Modules the init imports, measured by running it under qemu-user in the full tree."""
    key = hashlib.sha256(init_source + json.dumps(
        sorted((p, e.sha256()) for p, e in full if p.startswith(("/usr/bin/python3",
                                                                  STDLIB)))).encode())
    memo = cache_dir() / "python-imports" / f"{arch.debian}-{key.hexdigest()[:24]}.json"
    if memo.exists():
        return json.loads(memo.read_text())
    with tempfile.TemporaryDirectory(prefix="lxembed-py-") as tmp:
        root = Path(tmp) / "root"
        write_dir(full, root)
        (root / "init.py").write_bytes(init_source)
        env = {"PATH": "/usr/bin:/bin", "LXINIT_CONFIG": "/nonexistent.json"}
        proc = subprocess.Popen(
            qemu_user_argv(full, root, PYTHON, arch) + ["-IS", "-X", "importtime",
                                                         str(root / "init.py")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp)
        ready = False
        for line in proc.stdout:
            if b"ready" in line:
                ready = True
                break
        proc.send_signal(signal.SIGTERM)  # the OCI table outside PID 1: stop
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    modules = sorted({m.group(1) for m in map(_IMPORT_LINE.match, err.decode().splitlines())
                      if m})
    if not ready or not modules:
        raise UserError(f"the lxembed init did not get ready under {arch.qemu_user}: "
                        f"{err.decode()[-400:]}")
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps(modules))
    return modules


def _module_files(full: RootfsTree, modules: List[str], arch: Arch) -> List[str]:
    """Stdlib files behind module names (builtin and frozen modules have none).

    The frozen set is the host interpreter's, which compile_pyc() insists is 3.11 as well.
    """
    paths = [f"{STDLIB}/os.py"]  # the landmark getpath looks for (os itself is frozen)
    for name in modules:
        if _imp.is_frozen(name):  # built into the 3.11 interpreter: no file needed
            continue
        rel = name.replace(".", "/")
        for candidate in (f"{STDLIB}/{rel}.py", f"{STDLIB}/{rel}/__init__.py",
                          f"{STDLIB}/lib-dynload/{name}.cpython-311-{arch.triplet}.so"):
            if full.get(candidate) is not None:
                paths.append(candidate)
                break
    return paths


def compile_pyc(source: bytes, path: str) -> bytes:
    """An unchecked-hash .pyc (PEP 552): reproducible, never recompiled at boot.

    Compiled as `python -OO` would (no docstrings, no asserts): 10 KB less of the init to
    unpack and unmarshal at each boot. The stdlib is made to run under -OO, and the init
    neither asserts nor reads a docstring (tests/test_python_image.py holds it to that).
    """
    if sys.version_info[:2] != (3, 11):
        raise UserError("building Python images needs Python 3.11 on the host (bytecode must "
                        "match the target's python3.11)")
    code = compile(source, path, "exec", dont_inherit=True, optimize=2)
    flags = 0b01  # hash-based, unchecked
    return (importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def add_python_runtime(tree: RootfsTree, plan: Plan, source: PackageSource,
                       program: bytes) -> None:
    """Install python3.11 with exactly the stdlib `program` (the init's source) imports."""
    arch, epoch = plan.arch, plan.epoch
    full = python_tree(source)
    modules = probe_imports(full, arch, program)
    files = _module_files(full, modules, arch)
    native = [p for p in files if p.endswith(".so")]
    picked = pick_files(full, [PYTHON] + native, [], arch)
    for path, entry in picked:
        if path != "/" and tree.get(path) is None:
            tree.add(path, entry)
    if tree.get("/usr/bin/python3") is None:  # the name bind-host containers run it by
        tree.symlink("/usr/bin/python3", "python3.11", mtime=epoch, origin="python")
    sources = sorted(set(files) - set(native))
    for path in sources:
        text = full.read(path)
        if path == ALIASES:
            text = used_aliases(text, sources)
        tree.write(path[:-3] + ".pyc", compile_pyc(text, path), mtime=epoch,
                   origin="python stdlib")


def used_aliases(source: bytes, sources: List[str]) -> bytes:
    """encodings/aliases.py with only the names of codecs the image has.

    CPython imports it at every start (to find utf_8 by the name "utf8"): the whole table is
    330 names, 12 KB of bytecode run under emulation on each boot. A name whose codec module
    is not in the image fails to look up with or without its alias (the import of the module
    fails), so what codecs.lookup() answers is unchanged.
    """
    table = next(node.value for node in ast.parse(source).body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                 and [getattr(t, "id", None) for t in node.targets] == ["aliases"])
    codecs = {p.rsplit("/", 1)[1][:-3] for p in sources
              if p.startswith(f"{STDLIB}/encodings/")} - {"__init__", "aliases"}
    kept = {k: v for k, v in ast.literal_eval(table).items() if v in codecs}
    lines = "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(kept.items()))
    return (f"# lxembed: the aliases of the codecs in this image ({', '.join(sorted(codecs))})\n"
            f"aliases = {{\n{lines}}}\n").encode()
