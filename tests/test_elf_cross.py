"""Closures in Debian sysroots for arm64, armhf, mipsel, mips64el (bookworm) and riscv64
(trixie), checked against the target's own dynamic loader run under qemu-user with `--list`.

Slow: downloads the packages once (through lxembed's sources layer and its cache), then
extracts them into the user cache, so reruns take seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lxembed.arch import get_arch
from lxembed.elf.closure import check_tree_arch, elf_closure
from lxembed.elf.pick import pick_files
from lxembed.elf.sysroot import HostSysroot, TreeSysroot
from lxembed.errors import UserError
from lxembed.paths import cache_dir
from lxembed.tree import RootfsTree

pytestmark = pytest.mark.slow

SUITE = "bookworm"
CROSS_ARCHES = {"arm64": "bookworm", "armhf": "bookworm", "mipsel": "bookworm",
                "mips64el": "bookworm", "riscv64": "trixie"}  # riscv64 is in Debian from trixie
PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def packages(suite: str) -> list:
    """What the sysroot holds; base-files makes trixie's /lib -> usr/lib (its PT_INTERP path)."""
    py = PYTHON[suite]
    return ["curl", "openssl", f"python{py}-minimal", f"libpython{py}-stdlib"] + (
        ["base-files"] if suite != "bookworm" else [])


def python_of(arch) -> str:
    return PYTHON[CROSS_ARCHES[arch.debian]]


def programs(arch) -> list:
    """Programs, libraries and Python extension modules (which have no PT_INTERP)."""
    py = python_of(arch)
    triplet = arch.triplet
    dynload = f"/usr/lib/python{py}/lib-dynload/{{}}.cpython-{py.replace('.', '')}-{triplet}.so"
    return [
        "/usr/bin/curl",
        "/usr/bin/openssl",
        f"/usr/bin/python{py}",
        f"/usr/lib/{triplet}/libcurl.so.4",
        dynload.format("_ssl"),
        dynload.format("_ctypes"),
        dynload.format("_sqlite3"),
    ]


def fetch_debs(arch: str, packages: list, suite: str = SUITE) -> list:
    try:
        from lxembed.sources.apt import PackageSource
    except ImportError:  # pragma: no cover - the sources layer is part of lxembed
        pytest.skip("lxembed.sources.apt is not available")
    try:
        return [d.path for d in PackageSource(suite, arch).fetch(packages)]
    except UserError as err:
        pytest.skip(f"Debian packages for {arch} unavailable: {err}")


def extracted(arch: str, suite: str) -> tuple:
    """(host directory with the packages extracted by dpkg-deb, the .deb paths), cached."""
    debs = fetch_debs(arch, packages(suite), suite)
    digest = hashlib.sha256("\n".join(sorted(p.name for p in debs)).encode()).hexdigest()[:16]
    root = cache_dir() / "test-sysroots" / f"{suite}-{arch}-{digest}"
    if not (root / ".complete").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        # An empty loader cache: without it qemu-user falls back to the host's ld.so.cache.
        (tmp / "etc").mkdir(exist_ok=True)
        (tmp / "etc/ld.so.cache").write_bytes(b"")
        (tmp / ".complete").touch()
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    return root, debs


@pytest.fixture(scope="module", params=list(CROSS_ARCHES))
def sysroot(request):
    arch = get_arch(request.param)
    if not os.path.exists(arch.qemu_user_path):
        pytest.skip(f"{arch.qemu_user_path} is not installed")
    root, debs = extracted(arch.debian, CROSS_ARCHES[arch.debian])
    return arch, root, debs


def in_chroot(arch, root: Path, *argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run a target program inside `root` through a static qemu-user copied there.

    Not `qemu -L ROOT`: its path mapping misses the loader's stat() of library directories
    on armhf and mips (the loader then drops /lib/TRIPLET from its search) and follows
    absolute symlinks such as mips64el's /lib64/ld.so.1 on the host.
    """
    if os.geteuid() != 0 or not os.path.exists(CHROOT):
        pytest.skip("needs root and chroot to run the target's loader")
    qemu = root / ".qemu" / os.path.basename(arch.qemu_user_path)
    if not qemu.exists():
        qemu.parent.mkdir(exist_ok=True)
        shutil.copy2(arch.qemu_user_path, qemu)
    cmd = [CHROOT, str(root), f"/.qemu/{qemu.name}", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={"LC_ALL": "C"})


def loader_list(arch, root: Path, program: str) -> dict:
    """{name: path or None} as the target's ld.so prints with --list (paths inside root)."""
    host = HostSysroot(str(root))
    info = elf_closure(host, [program], arch).programs[0].info
    interp = info.interp or arch.ld_so[0]
    result = in_chroot(arch, root, interp, "--list", program)
    assert result.returncode == 0, result.stdout + result.stderr
    found = {}
    for line in result.stdout.splitlines():
        line = line.strip().rsplit(" (0x", 1)[0]
        name, arrow, path = line.partition(" => ")
        if not arrow:
            name = path = line
        if path == "not found":
            found[name] = None
        elif path.startswith("/"):
            if host.resolve(path) == host.resolve(interp):
                name = path = interp  # the kernel loads it by its PT_INTERP path
            found[name] = path
    return found


def test_closures_equal_the_target_loader(sysroot):
    arch, root, _ = sysroot
    host = HostSysroot(str(root))
    compared = 0
    for program in programs(arch):
        if host.resolve(program) is None:
            continue
        expected = loader_list(arch, root, program)
        started = time.perf_counter()
        closure = elf_closure(HostSysroot(str(root)), [program], arch)
        took = time.perf_counter() - started
        assert not closure.missing, [m.message() for m in closure.missing]
        want = {p for p in expected.values() if p} - {program}
        assert closure.paths == want, program
        assert closure.real_paths == {host.resolve(p) for p in want}, program
        compared += 1
        print(f"{arch.debian} {program}: {len(want)} objects, closure {took * 1000:.1f} ms")
    assert compared >= 5


def test_tree_sysroot_agrees_with_the_directory(sysroot):
    arch, root, debs = sysroot
    from lxembed.sources.deb import extract_deb

    tree = RootfsTree()
    for deb in debs:
        extract_deb(deb, tree)
    wanted = [p for p in programs(arch) if tree.get(p) is not None]
    from_tree = elf_closure(TreeSysroot(tree), wanted, arch)
    from_dir = elf_closure(HostSysroot(str(root)), wanted, arch)
    assert from_tree.real_paths == from_dir.real_paths and not from_tree.missing
    check_tree_arch(tree, arch)


def test_picked_python_runs_under_qemu_user(sysroot, tmp_path):
    """pick = ["/usr/bin/python3.X"] + the stdlib: the picked tree alone runs ctypes and ssl."""
    arch, root, debs = sysroot
    from lxembed.sources.deb import extract_deb
    from lxembed.writers.directory import write_dir

    tree = RootfsTree()
    for deb in debs:
        extract_deb(deb, tree)
    py = python_of(arch)
    picked = pick_files(tree, [f"/usr/bin/python{py}"], [f"/usr/lib/python{py}"], arch)
    assert picked.get("/usr/bin/curl") is None and picked.total_bytes() < tree.total_bytes()
    out = tmp_path / "picked"
    write_dir(picked, out)
    code = (
        "import ctypes, ssl, sqlite3;"
        "print(ssl.OPENSSL_VERSION.split()[0], ctypes.sizeof(ctypes.c_void_p))"
    )
    result = in_chroot(arch, out, f"/usr/bin/python{py}", "-IS", "-c", code, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OpenSSL", str(arch.elf_class // 8)]


def test_real_armel_busybox_is_refused_in_an_armhf_tree():
    armel = get_arch("armel")
    debs = fetch_debs(armel.debian, ["busybox-static"])
    from lxembed.sources.deb import extract_deb

    tree = RootfsTree()
    for deb in debs:
        extract_deb(deb, tree)
    check_tree_arch(tree, armel)
    with pytest.raises(
        UserError,
        match=r"^/bin/busybox is an ELF for armel \(ARM EABI5 soft-float\), "
        r"the board is armhf",
    ):
        check_tree_arch(tree, get_arch("armhf"))


def test_real_riscv64_busybox_is_refused_in_an_arm64_tree():
    riscv64 = get_arch("riscv64")
    debs = fetch_debs(riscv64.debian, ["busybox-static"], "trixie")
    from lxembed.sources.deb import extract_deb

    tree = RootfsTree()
    for deb in debs:
        extract_deb(deb, tree)
    check_tree_arch(tree, riscv64)
    with pytest.raises(
        UserError,
        match=r"^/usr/bin/busybox is an ELF for riscv64 \(RISC-V lp64d double-float\), "
        r"the board is arm64",
    ):
        check_tree_arch(tree, get_arch("arm64"))
