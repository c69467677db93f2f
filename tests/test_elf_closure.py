"""Library closures: against the host's ldd, ld.so search rules, sysroots, arch refusals."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_elf_synth import (
    ARMEL_FLAGS,
    ARMHF_FLAGS,
    EM_AARCH64,
    EM_ARM,
    EM_MIPS,
    EM_RISCV,
    ET_EXEC,
    ET_REL,
    MIPS_O32_FLAGS,
    RISCV_LP64D_FLAGS,
    RISCV_SOFT_FLAGS,
    make_elf,
)

from lxembed.arch import get_arch
from lxembed.elf.closure import check_tree_arch, elf_closure, ld_so_conf_dirs
from lxembed.elf.sysroot import HostSysroot, TreeSysroot
from lxembed.errors import UserError
from lxembed.tree import RootfsTree

AMD64 = get_arch("amd64")
ON_DEBIAN_AMD64 = os.path.exists("/lib64/ld-linux-x86-64.so.2") and shutil.which("ldd")

# Debian binaries with many libraries; `python3` on PATH may be pyenv's, so name /usr/bin's.
HOST_PROGRAMS = sorted(glob.glob("/usr/bin/python3.[0-9]*[0-9]")) + [
    f"/usr/bin/{name}"
    for name in ("ssh", "curl", "gpg", "git", "wget", "gdb", "crun", "qemu-system-x86_64")
]
HOST_PROGRAMS = [p for p in HOST_PROGRAMS if os.path.isfile(p) and not os.path.islink(p)]
# Libraries and extension modules have no PT_INTERP: ldd still shows the loader they live with.
HOST_LIBRARIES = [
    p
    for p in ["/lib/x86_64-linux-gnu/libcurl.so.4", "/lib/x86_64-linux-gnu/libgnutls.so.30"]
    + sorted(glob.glob("/usr/lib/python3.*/lib-dynload/_ssl.cpython-*-x86_64-linux-gnu.so"))
    if os.path.exists(p)
]


def ldd(path: str, env=None) -> dict:
    """{name: path or None} from the host's ldd (the loader in trace mode)."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, env=env).stdout
    found = {}
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            rest = rest.strip()
            found[name.strip()] = None if rest.startswith("not found") else rest.split(" (")[0]
        elif line.startswith("/"):
            found[line.split(" (")[0]] = line.split(" (")[0]
    return found


@pytest.mark.skipif(not ON_DEBIAN_AMD64, reason="needs a Debian amd64 host with ldd")
def test_enough_host_programs():
    assert len(HOST_PROGRAMS) >= 5, HOST_PROGRAMS


@pytest.mark.skipif(not ON_DEBIAN_AMD64, reason="needs a Debian amd64 host with ldd")
@pytest.mark.parametrize("program", HOST_PROGRAMS + HOST_LIBRARIES)
def test_closure_equals_host_ldd(program):
    expected = {p for p in ldd(program).values() if p}
    closure = elf_closure(HostSysroot("/"), [program], AMD64)
    assert not closure.missing
    assert closure.paths == expected  # the very paths ld.so opens
    assert closure.real_paths == {os.path.realpath(p) for p in expected}
    assert len(expected) >= 3


# -- ld.so search rules, checked against the real loader with libraries built here --------------
needs_gcc = pytest.mark.skipif(
    not (ON_DEBIAN_AMD64 and shutil.which("gcc")), reason="needs gcc and ldd on amd64"
)


def _cc(tmp: Path, out: str, *args: str, shared: bool = True) -> None:
    src = tmp / "src.c"
    src.write_text("int f(void) { return 1; }\n" if shared else "int main(void) { return 0; }\n")
    flags = ["-shared", "-fPIC"] if shared else []
    cmd = ["gcc", *flags, "-o", str(tmp / out), str(src), "-Wl,--no-as-needed", *args]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def search_rules(tmp_path_factory):
    """Libraries in A and B with one name, and programs with every RPATH/RUNPATH combination."""
    t = tmp_path_factory.mktemp("rules")
    for d in ("A", "B", "C", "bin", "lib/x86_64-linux-gnu"):
        (t / d).mkdir(parents=True)
    link = [f"-Wl,-rpath-link,{t}/A", "-Wl,--disable-new-dtags"]
    for d in ("A", "B"):
        _cc(t, f"{d}/liblxy.so", "-Wl,-soname,liblxy.so")
    _cc(t, "lib/x86_64-linux-gnu/liblxy.so", "-Wl,-soname,liblxy.so")
    _cc(t, "A/liblxx.so", f"-L{t}/A", "-llxy")  # no paths: inherits its loader's RPATH
    _cc(t, "C/liblxx.so", f"-L{t}/A", "-llxy", "-Wl,--enable-new-dtags", f"-Wl,-rpath,{t}/B")
    new = "-Wl,--enable-new-dtags"
    programs = {
        "rpath_inherited": [f"-L{t}/A", "-llxx", *link, f"-Wl,-rpath,{t}/A"],
        "runpath_of_lib_wins": [f"-L{t}/C", "-llxx", *link, f"-Wl,-rpath,{t}/C:{t}/A"],
        "runpath_not_inherited": [f"-L{t}/A", "-llxx", *link[:1], new, f"-Wl,-rpath,{t}/A"],
        "origin": [f"-L{t}/A", "-llxx", *link, "-Wl,-rpath,$ORIGIN/../A"],
        "lib_token": [f"-L{t}/A", "-llxy", *link, "-Wl,-rpath,$ORIGIN/../$LIB"],
        "runpath_of_program": [f"-L{t}/A", "-llxy", *link[:1], new, f"-Wl,-rpath,{t}/B"],
    }
    for name, args in programs.items():
        _cc(t, f"bin/{name}", *args, shared=False)
    return t


@needs_gcc
@pytest.mark.parametrize(
    "program",
    [
        "rpath_inherited",
        "runpath_of_lib_wins",
        "runpath_not_inherited",
        "origin",
        "lib_token",
        "runpath_of_program",
    ],
)
def test_search_rules_match_the_real_loader(search_rules, program):
    path = str(search_rules / "bin" / program)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    expected = ldd(path, env)
    result = elf_closure(HostSysroot("/"), [path], AMD64).programs[0]
    got = {name: (os.path.realpath(p) if p else None) for name, p in result.ldd_lines}
    assert got == {n: (os.path.realpath(p) if p else None) for n, p in expected.items()}
    if program == "runpath_not_inherited":
        assert got["liblxy.so"] is None
        assert result.missing[0].message() == (
            f"liblxy.so not found: needed by {search_rules}/A/liblxx.so <- needed by {path}"
        )


# -- sysroots made of RootfsTrees ------------------------------------------------------------------
ARMHF = get_arch("armhf")
HF = dict(elf_class=32, machine=EM_ARM, flags=ARMHF_FLAGS)
EL = dict(elf_class=32, machine=EM_ARM, flags=ARMEL_FLAGS)
TRIPLET = "/usr/lib/arm-linux-gnueabihf"


def armhf_tree() -> RootfsTree:
    """A merged-/usr armhf tree: /lib -> usr/lib, versioned libraries behind symlinks."""
    t = RootfsTree()
    t.mkdir("/usr/lib/arm-linux-gnueabihf")
    t.symlink("/lib", "usr/lib")
    t.write(f"{TRIPLET}/ld-linux-armhf.so.3", make_elf(**HF, soname="ld-linux-armhf.so.3"))
    t.symlink("/usr/lib/ld-linux-armhf.so.3", "arm-linux-gnueabihf/ld-linux-armhf.so.3")
    t.write(
        f"{TRIPLET}/libc.so.6", make_elf(**HF, soname="libc.so.6", needed=["ld-linux-armhf.so.3"])
    )
    t.write(
        f"{TRIPLET}/libfoo.so.1.2.3", make_elf(**HF, soname="libfoo.so.1", needed=["libc.so.6"])
    )
    t.symlink(f"{TRIPLET}/libfoo.so.1", "libfoo.so.1.2.3")
    prog = make_elf(
        **HF, e_type=ET_EXEC, interp="/lib/ld-linux-armhf.so.3", needed=["libfoo.so.1", "libc.so.6"]
    )
    t.write("/usr/bin/prog", prog, mode=0o755)
    return t


def test_tree_closure_paths_and_symlinks():
    closure = elf_closure(TreeSysroot(armhf_tree()), ["/usr/bin/prog"], ARMHF)
    assert not closure.missing
    # /lib/TRIPLET comes first in the loader's list and leads (through /lib -> usr/lib) there
    assert closure.paths == {
        f"/lib/arm-linux-gnueabihf/{n}" for n in ("libfoo.so.1", "libc.so.6")
    } | {"/lib/ld-linux-armhf.so.3"}
    assert closure.real_paths == {
        f"{TRIPLET}/libfoo.so.1.2.3",
        f"{TRIPLET}/libc.so.6",
        f"{TRIPLET}/ld-linux-armhf.so.3",
    }
    assert closure.symlinks == {"/lib", "/usr/lib/ld-linux-armhf.so.3", f"{TRIPLET}/libfoo.so.1"}
    program = closure.programs[0]
    # libc needs the loader by its soname: it is the PT_INTERP already loaded, not searched
    assert program.ldd_lines[-1] == ("/lib/ld-linux-armhf.so.3", "/lib/ld-linux-armhf.so.3")
    assert [n for n, _ in program.ldd_lines] == [
        "libfoo.so.1",
        "libc.so.6",
        "/lib/ld-linux-armhf.so.3",
    ]


RISCV64 = get_arch("riscv64")
RV = dict(elf_class=64, machine=EM_RISCV, flags=RISCV_LP64D_FLAGS)
RV_SOFT = dict(elf_class=64, machine=EM_RISCV, flags=RISCV_SOFT_FLAGS)
RV_TRIPLET = "/usr/lib/riscv64-linux-gnu"
RV_LOADER = "ld-linux-riscv64-lp64d.so.1"


def riscv64_tree() -> RootfsTree:
    """Debian trixie's riscv64 layout: /lib -> usr/lib (base-files), the loader in the
    multiarch directory with a /usr/lib symlink to it (libc6), PT_INTERP /lib/ld-linux-...."""
    t = RootfsTree()
    t.mkdir(RV_TRIPLET)
    t.symlink("/lib", "usr/lib")
    t.write(f"{RV_TRIPLET}/{RV_LOADER}", make_elf(**RV, soname=RV_LOADER))
    t.symlink(f"/usr/lib/{RV_LOADER}", f"riscv64-linux-gnu/{RV_LOADER}")
    t.write(f"{RV_TRIPLET}/libc.so.6", make_elf(**RV, soname="libc.so.6", needed=[RV_LOADER]))
    t.write("/usr/bin/prog", make_elf(**RV, e_type=ET_EXEC, interp=f"/lib/{RV_LOADER}",
                                      needed=["libc.so.6"]), mode=0o755)
    return t


def test_riscv64_closure_through_the_merged_usr_loader_path():
    assert RISCV64.ld_so == (f"/lib/{RV_LOADER}",)
    closure = elf_closure(TreeSysroot(riscv64_tree()), ["/usr/bin/prog"], RISCV64)
    assert not closure.missing
    assert closure.real_paths == {f"{RV_TRIPLET}/libc.so.6", f"{RV_TRIPLET}/{RV_LOADER}"}
    assert closure.paths == {"/lib/riscv64-linux-gnu/libc.so.6", f"/lib/{RV_LOADER}"}
    assert closure.symlinks == {"/lib", f"/usr/lib/{RV_LOADER}"}


def test_riscv64_library_of_another_float_abi_is_skipped_like_ld_so_does():
    """glibc's RISC-V loader skips a library of another float ABI and searches on."""
    t = riscv64_tree()
    t.mkdir("/usr/local/lib")
    t.write("/etc/ld.so.conf", b"/usr/local/lib\n")
    t.write("/usr/local/lib/libc.so.6", make_elf(**RV_SOFT, soname="libc.so.6"))  # lp64: skipped
    closure = elf_closure(TreeSysroot(t), ["/usr/bin/prog"], RISCV64)
    assert f"{RV_TRIPLET}/libc.so.6" in closure.real_paths and not closure.missing


def test_riscv64_soft_float_program_and_arm64_library_are_refused():
    t = riscv64_tree()
    check_tree_arch(t, RISCV64)
    t.write("/lib/modules/6.12/virtio_net.ko", make_elf(**RV_SOFT, e_type=ET_REL))  # a module
    check_tree_arch(t, RISCV64)
    t.write("/usr/bin/soft", make_elf(**RV_SOFT, e_type=ET_EXEC))
    with pytest.raises(UserError) as err:
        check_tree_arch(t, RISCV64)
    assert str(err.value) == ("/usr/bin/soft is an ELF for RISC-V lp64 soft-float "
                              "(no architecture lxembed supports), the board is riscv64")
    t.remove("/usr/bin/soft")
    t.write(f"{RV_TRIPLET}/libz.so.1", make_elf(64, machine=EM_AARCH64, soname="libz.so.1"))
    with pytest.raises(UserError, match=rf"^{RV_TRIPLET}/libz.so.1 is an ELF for arm64 "
                                        r"\(AArch64\), the board is riscv64"):
        check_tree_arch(t, RISCV64)
    # and the other way round: the riscv64 program has no place in an arm64 image
    with pytest.raises(UserError, match=r"/usr/bin/prog is an ELF for riscv64 \(RISC-V lp64d "
                                        r"double-float\), the board is arm64"):
        elf_closure(TreeSysroot(riscv64_tree()), ["/usr/bin/prog"], get_arch("arm64"))


def test_missing_library_names_the_chain():
    t = armhf_tree()
    t.write("/opt/x/lib/libbar.so.2", make_elf(**HF, soname="libbar.so.2", needed=["libgone.so.1"]))
    prog = make_elf(
        **HF,
        e_type=ET_EXEC,
        interp="/lib/ld-linux-armhf.so.3",
        needed=["libbar.so.2"],
        runpath="/opt/x/lib",
    )
    t.write("/usr/bin/baz", prog)
    closure = elf_closure(TreeSysroot(t), ["/usr/bin/baz"], ARMHF)
    [missing] = closure.missing
    assert missing.message() == (
        "libgone.so.1 not found: needed by /opt/x/lib/libbar.so.2 <- needed by /usr/bin/baz"
    )
    with pytest.raises(UserError, match="libgone.so.1 not found: needed by /opt/x/lib/libbar"):
        closure.raise_for_missing()


def test_missing_interpreter():
    t = armhf_tree()
    t.remove(f"{TRIPLET}/ld-linux-armhf.so.3")
    closure = elf_closure(TreeSysroot(t), ["/usr/bin/prog"], ARMHF)
    assert any(
        m.is_interp and "dynamic loader (PT_INTERP) of /usr/bin/prog" in m.message()
        for m in closure.missing
    )


def test_library_for_another_arch_is_skipped_like_ld_so_does():
    t = armhf_tree()
    t.mkdir("/usr/local/lib")
    t.write("/etc/ld.so.conf", b"include\t/etc/ld.so.conf.d/*.conf\n")
    t.write("/etc/ld.so.conf.d/local.conf", b"# local\n/usr/local/lib\n")
    t.write("/usr/local/lib/libfoo.so.1", make_elf(**EL, soname="libfoo.so.1"))  # armel: skipped
    assert ld_so_conf_dirs(TreeSysroot(t)) == ["/usr/local/lib"]
    closure = elf_closure(TreeSysroot(t), ["/usr/bin/prog"], ARMHF)
    assert f"{TRIPLET}/libfoo.so.1.2.3" in closure.real_paths
    t.write("/usr/local/lib/libfoo.so.1", make_elf(**HF, soname="libfoo.so.1"))  # armhf: taken
    closure = elf_closure(TreeSysroot(t), ["/usr/bin/prog"], ARMHF)
    assert "/usr/local/lib/libfoo.so.1" in closure.real_paths


def test_runpath_hides_rpath_of_the_same_object():
    t = armhf_tree()
    for d in ("/opt/r", "/opt/u"):
        t.write(f"{d}/libq.so.1", make_elf(**HF, soname="libq.so.1"))
    both = make_elf(
        **HF,
        e_type=ET_EXEC,
        interp="/lib/ld-linux-armhf.so.3",
        needed=["libq.so.1"],
        rpath="/opt/r",
        runpath="/opt/u",
    )
    t.write("/usr/bin/both", both)
    closure = elf_closure(TreeSysroot(t), ["/usr/bin/both"], ARMHF)
    assert "/opt/u/libq.so.1" in closure.real_paths
    assert "/opt/r/libq.so.1" not in closure.real_paths


def test_nodeflib_skips_default_dirs():
    t = armhf_tree()
    prog = make_elf(
        **HF,
        e_type=ET_EXEC,
        interp="/lib/ld-linux-armhf.so.3",
        needed=["libfoo.so.1"],
        flags_1=0x800,
    )
    t.write("/usr/bin/nodeflib", prog)
    closure = elf_closure(TreeSysroot(t), ["/usr/bin/nodeflib"], ARMHF)
    assert [m.name for m in closure.missing] == ["libfoo.so.1"]


def test_absolute_symlinks_resolve_inside_the_sysroot(tmp_path):
    """/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/... must not reach the host's file."""
    (tmp_path / "lib64").mkdir()
    (tmp_path / "usr/bin").mkdir(parents=True)
    host_loader = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    os.symlink(host_loader, tmp_path / "lib64/ld-linux-x86-64.so.2")
    prog = make_elf(64, machine=EM_AARCH64, e_type=ET_EXEC, interp="/lib64/ld-linux-x86-64.so.2")
    (tmp_path / "usr/bin/prog").write_bytes(prog)
    sysroot = HostSysroot(str(tmp_path))
    assert sysroot.resolve("/lib64/ld-linux-x86-64.so.2") is None  # not the host's loader
    closure = elf_closure(sysroot, ["/usr/bin/prog"], get_arch("arm64"))
    assert closure.missing and closure.missing[0].is_interp
    # once the target exists inside the sysroot, it is found there
    (tmp_path / "lib/x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / host_loader[1:]).write_bytes(make_elf(64, machine=EM_AARCH64))
    sysroot = HostSysroot(str(tmp_path))
    trace = sysroot.trace("/lib64/ld-linux-x86-64.so.2")
    assert trace.real_path == host_loader and trace.links == ("/lib64/ld-linux-x86-64.so.2",)
    assert sysroot.read("/lib64/ld-linux-x86-64.so.2") == make_elf(64, machine=EM_AARCH64)


def test_symlink_loops_and_dotdot(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    (tmp_path / "real/sub").mkdir(parents=True)
    os.symlink("/real/sub", tmp_path / "link")
    (tmp_path / "real/file").write_text("x")
    sysroot = HostSysroot(str(tmp_path))
    assert sysroot.trace("/a") is None
    # ".." is taken from the real directory the link leads to, as the kernel does
    assert sysroot.resolve("/link/../file") == "/real/file"
    assert sysroot.resolve("/../../real/file") == "/real/file"


# -- refusing ELF files the board cannot run ----------------------------------------------------
def test_armel_binary_in_armhf_tree_is_refused():
    t = armhf_tree()
    t.write("/usr/bin/foo", make_elf(**EL, e_type=ET_EXEC, interp="/lib/ld-linux.so.3"))
    with pytest.raises(UserError) as err:
        check_tree_arch(t, ARMHF)
    assert str(err.value) == (
        "/usr/bin/foo is an ELF for armel (ARM EABI5 soft-float), the board is armhf"
    )


def test_big_endian_mips_in_mipsel_tree_is_refused():
    t = RootfsTree()
    t.write("/bin/busybox", make_elf(32, "little", EM_MIPS, flags=MIPS_O32_FLAGS, e_type=ET_EXEC))
    check_tree_arch(t, get_arch("mipsel"))
    t.write("/usr/sbin/daemon", make_elf(32, "big", EM_MIPS, flags=MIPS_O32_FLAGS, e_type=ET_EXEC))
    with pytest.raises(
        UserError,
        match=r"^/usr/sbin/daemon is an ELF for MIPS o32 big-endian .*"
        r"the board is mipsel",
    ):
        check_tree_arch(t, get_arch("mipsel"))


@pytest.mark.skipif(not os.path.exists("/lib/x86_64-linux-gnu/libz.so.1"), reason="no host libz")
def test_x86_64_library_in_arm64_tree_is_refused():
    t = RootfsTree()
    t.write(
        "/usr/lib/aarch64-linux-gnu/libz.so.1", Path("/lib/x86_64-linux-gnu/libz.so.1").read_bytes()
    )
    with pytest.raises(
        UserError,
        match=r"^/usr/lib/aarch64-linux-gnu/libz.so.1 is an ELF for "
        r"amd64 \(x86-64\), the board is arm64",
    ):
        check_tree_arch(t, get_arch("arm64"))


def test_tree_check_allows_modules_firmware_and_scripts():
    t = armhf_tree()
    t.write(
        "/lib/modules/6.1.0/kernel/x.ko",
        make_elf(32, machine=EM_ARM, flags=0x05000000, e_type=ET_REL),
    )
    t.write("/lib/firmware/dsp.elf", make_elf(32, machine=164))  # a DSP's firmware (QDSP6)
    t.write("/usr/share/x.bpf.o", make_elf(64, machine=247, e_type=ET_REL))
    t.write("/usr/bin/script", b"#!/bin/sh\n")
    check_tree_arch(t, ARMHF)


def test_tree_check_names_a_malformed_elf():
    t = armhf_tree()
    t.write("/usr/lib/broken.so", make_elf(**HF)[:30])
    with pytest.raises(UserError, match="/usr/lib/broken.so is a malformed or truncated ELF"):
        check_tree_arch(t, ARMHF)


def test_closure_of_a_program_for_another_arch_is_refused():
    t = armhf_tree()
    t.write("/usr/bin/foo", make_elf(**EL, e_type=ET_EXEC))
    with pytest.raises(UserError, match="/usr/bin/foo is an ELF for armel"):
        elf_closure(TreeSysroot(t), ["/usr/bin/foo"], ARMHF)
