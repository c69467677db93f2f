"""CPython for the target arch, cut down to what the lxembed init really loads.

The module set is measured, not listed by hand: the init runs under qemu-user inside the full
Python tree with `-X importtime`, which names every module it imports. Those modules are kept
as sourceless, hash-based .pyc files (no compile at boot, no mtime in the image); the
interpreter and extension modules come with their exact ELF closure (lxembed.elf.pick).
"""

from __future__ import annotations

import _imp
import ast
import contextlib
import hashlib
import importlib.util
import json
import marshal
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Set, Tuple

from ..arch import Arch
from ..config import Plan
from ..elf.pick import pick_files
from ..errors import UserError
from ..paths import cache_dir
from ..sources.apt import PackageSource
from ..sources.unpacked import add_packages
from ..suites import empty_root, get_suite
from ..tree import RootfsTree
from ..writers.directory import write_dir
from .emulate import qemu_user_argv

_IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s+(\S+)\s*$")
HOST_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass(frozen=True)
class Python:
    """Where the python3.X of a suite lives (lxembed/suites.py says which X)."""

    version: str  # "3.11"

    @property
    def packages(self) -> tuple:
        return (f"python{self.version}-minimal", f"libpython{self.version}-stdlib")

    @property
    def binary(self) -> str:
        return f"/usr/bin/python{self.version}"

    @property
    def stdlib(self) -> str:
        return f"/usr/lib/python{self.version}"

    def extension(self, name: str, arch: Arch) -> str:
        return (f"{self.stdlib}/lib-dynload/{name}.cpython-{self.version.replace('.', '')}-"
                f"{arch.triplet}.so")


def suite_python(plan: Plan) -> Python:
    return Python(get_suite(plan.board.suite).python)


# Run by the image's own python3.X (under qemu-user) when it is not the host's version: the
# bytecode of one version does not load in another, nor is one version's frozen set another's.
# stdin: {"frozen": [module names], "sources": {path: source}}; stdout: which of the modules
# are frozen, and each source as compile_pyc() makes it.
_TARGET_COMPILE = """
import _imp, importlib.util, json, marshal, sys
job = json.loads(sys.stdin.buffer.read())
out = {"frozen": [m for m in job["frozen"] if _imp.is_frozen(m)], "pyc": {}}
for path, text in sorted(job["sources"].items()):
    source = text.encode("latin-1")
    code = compile(source, path, "exec", dont_inherit=True, optimize=2)
    pyc = (importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
           + importlib.util.source_hash(source) + marshal.dumps(code))
    out["pyc"][path] = pyc.hex()
sys.stdout.write(json.dumps(out))
"""


def python_tree(plan: Plan, source: PackageSource) -> RootfsTree:
    tree = empty_root(plan.board.suite, plan.arch)
    add_packages(source.fetch(list(suite_python(plan).packages)), tree)
    return tree


def _python_files_key(full: RootfsTree, python: Python) -> str:
    return json.dumps(sorted((p, e.sha256()) for p, e in full
                             if p.startswith(("/usr/bin/python3", python.stdlib))))


@contextlib.contextmanager
def _run_in_tree(full: RootfsTree, arch: Arch, python: Python, args: List[str],
                 files: Dict[str, bytes], **popen) -> Iterator[subprocess.Popen]:
    """python3.X of `full` started under qemu-user in a copy of the tree, with `files` added
    at its top ("{root}" in `args` is where the copy is); the copy goes when the block ends."""
    with tempfile.TemporaryDirectory(prefix="lxembed-py-") as tmp:
        root = Path(tmp) / "root"
        write_dir(full, root)
        for name, data in files.items():
            (root / name).write_bytes(data)
        args = [a.replace("{root}", str(root)) for a in args]
        with subprocess.Popen(qemu_user_argv(full, root, python.binary, arch) + args,
                              env={"PATH": "/usr/bin:/bin", "LXINIT_CONFIG": "/nonexistent.json"},
                              cwd=tmp, **popen) as proc:
            yield proc


def probe_imports(full: RootfsTree, arch: Arch, init_source: bytes,
                  python: Python = Python("3.11")) -> List[str]:
    """Modules the init imports, measured by running it under qemu-user in the full tree."""
    key = hashlib.sha256(init_source + _python_files_key(full, python).encode())
    memo = cache_dir() / "python-imports" / f"{arch.debian}-{key.hexdigest()[:24]}.json"
    if memo.exists():
        return json.loads(memo.read_text())
    with _run_in_tree(full, arch, python, ["-IS", "-X", "importtime", "{root}/init.py"],
                      {"init.py": init_source}, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE) as proc:
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


class Compiler:
    """Bytecode for the image's python3.X: the host's own compile() when the host runs the
    same version, else the image's interpreter under qemu-user, once per set of sources (the
    result is kept in the cache, keyed by the interpreter's files and the sources)."""

    def __init__(self, full: RootfsTree, arch: Arch, python: Python) -> None:
        self.full, self.arch, self.python = full, arch, python

    def compile(self, sources: Dict[str, bytes], modules: Sequence[str] = ()) -> Tuple[
            Dict[str, bytes], Set[str]]:
        """(path -> .pyc of each source, which of `modules` are frozen in the interpreter)."""
        host = self.python.version == HOST_VERSION
        job = json.dumps({"frozen": sorted(modules),
                          "sources": {p: t.decode("latin-1") for p, t in sources.items()}},
                         sort_keys=True)
        # The host's compile() depends on its bytecode version only; the image's interpreter
        # on its files. Either way a warm build reads the result (the host's compile of the
        # init and its stdlib cost ~40 ms of a 0.4 s build).
        compiler = (sys.version + importlib.util.MAGIC_NUMBER.hex() if host
                    else _TARGET_COMPILE + _python_files_key(self.full, self.python))
        key = hashlib.sha256((compiler + job).encode()).hexdigest()[:32]
        memo = cache_dir() / "python-bytecode" / f"{self.arch.debian}-{key}.json"
        try:
            result = json.loads(memo.read_text())
        except (OSError, ValueError):
            result = self._host(sources, modules) if host else self._run(job)
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
            tmp.write_text(json.dumps(result))
            os.replace(tmp, memo)  # whole or absent: a damaged memo is compiled again
        return ({p: bytes.fromhex(h) for p, h in result["pyc"].items()}, set(result["frozen"]))

    @staticmethod
    def _host(sources: Dict[str, bytes], modules: Sequence[str]) -> dict:
        return {"pyc": {p: compile_pyc(text, p).hex() for p, text in sources.items()},
                "frozen": sorted(m for m in modules if _imp.is_frozen(m))}

    def _run(self, job: str) -> dict:
        with _run_in_tree(self.full, self.arch, self.python, ["-IS", "-c", _TARGET_COMPILE],
                          {}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
            out, err = proc.communicate(job.encode(), timeout=600)
        try:
            result = json.loads(out)
        except ValueError:
            raise UserError(f"python{self.python.version} ({self.arch.debian}, under "
                            f"{self.arch.qemu_user}) did not compile the init's modules: "
                            f"{err.decode(errors='replace')[-400:]}") from None
        if set(result["pyc"]) != set(json.loads(job)["sources"]):
            raise UserError(f"python{self.python.version} compiled only part of the sources")
        return result


def _module_files(full: RootfsTree, modules: List[str], arch: Arch, python: Python,
                  frozen: Set[str]) -> List[str]:
    """Stdlib files behind module names (builtin and frozen modules have none)."""
    paths = [f"{python.stdlib}/os.py"]  # the landmark getpath looks for (os itself is frozen)
    for name in modules:
        if name in frozen:  # built into the interpreter: no file needed
            continue
        rel = name.replace(".", "/")
        for candidate in (f"{python.stdlib}/{rel}.py", f"{python.stdlib}/{rel}/__init__.py",
                          python.extension(name, arch)):
            if full.get(candidate) is not None:
                paths.append(candidate)
                break
    return paths


def compile_pyc(source: bytes, path: str) -> bytes:
    """An unchecked-hash .pyc (PEP 552) for the host's Python: reproducible, never
    recompiled at boot.

    Compiled as `python -OO` would (no docstrings, no asserts): 10 KB less of the init to
    unpack and unmarshal at each boot. The stdlib is made to run under -OO, and the init
    neither asserts nor reads a docstring (tests/test_python_image.py holds it to that).
    _TARGET_COMPILE does the same in the image's interpreter.
    """
    code = compile(source, path, "exec", dont_inherit=True, optimize=2)
    flags = 0b01  # hash-based, unchecked
    return (importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code))


def add_python_runtime(tree: RootfsTree, plan: Plan, source: PackageSource,
                       program: bytes, program_path: str) -> bytes:
    """Install the suite's python3.X with exactly the stdlib `program` (the init's source)
    imports; returns `program` compiled for it (as `program_path`)."""
    arch, epoch, python = plan.arch, plan.epoch, suite_python(plan)
    full = python_tree(plan, source)
    modules = probe_imports(full, arch, program, python)
    compiler = Compiler(full, arch, python)
    _, frozen = compiler.compile({}, modules)
    files = _module_files(full, modules, arch, python, frozen)
    native = [p for p in files if p.endswith(".so")]
    picked = pick_files(full, [python.binary] + native, [], arch)
    for path, entry in picked:
        if path != "/" and tree.get(path) is None:
            tree.add(path, entry)
    if tree.get("/usr/bin/python3") is None:  # the name bind-host containers run it by
        tree.symlink("/usr/bin/python3", f"python{python.version}", mtime=epoch, origin="python")
    sources = sorted(set(files) - set(native))
    texts = {path: full.read(path) for path in sources}
    aliases = f"{python.stdlib}/encodings/aliases.py"
    if aliases in texts:
        texts[aliases] = used_aliases(texts[aliases], sources, python)
    pycs, _ = compiler.compile({**texts, program_path: program})
    for path in sources:
        tree.write(path[:-3] + ".pyc", pycs[path], mtime=epoch, origin="python stdlib")
    return pycs[program_path]


def used_aliases(source: bytes, sources: List[str], python: Python = Python("3.11")) -> bytes:
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
              if p.startswith(f"{python.stdlib}/encodings/")} - {"__init__", "aliases"}
    kept = {k: v for k, v in ast.literal_eval(table).items() if v in codecs}
    lines = "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(kept.items()))
    return (f"# lxembed: the aliases of the codecs in this image ({', '.join(sorted(codecs))})\n"
            f"aliases = {{\n{lines}}}\n").encode()
