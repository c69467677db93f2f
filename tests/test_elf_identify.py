"""ELF identification, architecture matching, and malformed files (UserError, never a traceback)."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from test_elf_synth import (
    ARMEL_FLAGS,
    ARMHF_FLAGS,
    EM_386,
    EM_AARCH64,
    EM_ARM,
    EM_MIPS,
    EM_RISCV,
    EM_X86_64,
    ET_EXEC,
    ET_REL,
    MIPS_O32_FLAGS,
    RISCV_LP64D_FLAGS,
    RISCV_SOFT_FLAGS,
    make_elf,
)

from lxembed.arch import ARCHES, get_arch
from lxembed.elf.identify import identify, is_elf, runs_on
from lxembed.errors import UserError

HOST_LIB = next(
    (
        p
        for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1")
        if Path(p).exists()
    ),
    None,
)


def arches_of(data: bytes) -> list:
    return [a.debian for a in identify(data, "/x").matching_arches()]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(elf_class=32, machine=EM_ARM, flags=ARMHF_FLAGS), ["armhf"]),
        (dict(elf_class=32, machine=EM_ARM, flags=ARMEL_FLAGS), ["armel"]),
        # EABI5 without float flags (assembly-only objects) follows the soft-float base ABI
        (dict(elf_class=32, machine=EM_ARM, flags=0x05000000), ["armel"]),
        (dict(elf_class=32, machine=EM_ARM, flags=0), []),  # old ABI (OABI)
        (dict(elf_class=64, machine=EM_AARCH64), ["arm64"]),
        (dict(elf_class=64, endian="big", machine=EM_AARCH64), []),
        (dict(elf_class=32, machine=EM_MIPS, flags=MIPS_O32_FLAGS), ["mipsel"]),
        (dict(elf_class=32, endian="big", machine=EM_MIPS, flags=MIPS_O32_FLAGS), []),
        (dict(elf_class=32, machine=EM_MIPS, flags=0x70000027), []),  # n32
        (dict(elf_class=32, machine=EM_MIPS, flags=MIPS_O32_FLAGS | 0x400), []),  # NaN2008
        (dict(elf_class=64, machine=EM_MIPS, flags=0x80000007), ["mips64el"]),
        (dict(elf_class=64, machine=EM_X86_64), ["amd64"]),
        (dict(elf_class=32, machine=EM_X86_64), []),  # x32
        (dict(elf_class=32, machine=EM_386), ["i386"]),
        (dict(elf_class=64, machine=EM_X86_64, osabi=9), []),  # FreeBSD
        (dict(elf_class=64, machine=EM_RISCV, flags=RISCV_LP64D_FLAGS), ["riscv64"]),
        (dict(elf_class=64, machine=EM_RISCV, flags=0x4), ["riscv64"]),  # lp64d without RVC
        (dict(elf_class=64, machine=EM_RISCV, flags=RISCV_SOFT_FLAGS), []),  # lp64: soft-float
        (dict(elf_class=64, machine=EM_RISCV, flags=0x3), []),  # lp64f: single-float
        (dict(elf_class=64, machine=EM_RISCV, flags=0xD), []),  # lp64e: the embedded base ISA
        (dict(elf_class=32, machine=EM_RISCV, flags=RISCV_LP64D_FLAGS), []),  # ilp32d: RV32
        (dict(elf_class=64, endian="big", machine=EM_RISCV, flags=RISCV_LP64D_FLAGS), []),
        (dict(elf_class=64, machine=0), sorted(ARCHES)),  # EM_NONE: no CPU, any image
    ],
)
def test_matching_arches(kwargs, expected):
    assert sorted(arches_of(make_elf(**kwargs))) == sorted(expected)


def test_kernel_modules_are_soft_float_even_on_armhf():
    module = make_elf(32, machine=EM_ARM, flags=0x05000000, e_type=ET_REL)
    assert runs_on(identify(module, "/lib/modules/x.ko"), get_arch("armhf"))
    assert not runs_on(identify(module, "/x.ko"), get_arch("arm64"))


def test_riscv_kernel_modules_are_soft_float_and_still_fit():
    """The riscv64 kernel (and its modules) is built for lp64: the float ABI binds userland."""
    module = make_elf(64, machine=EM_RISCV, flags=RISCV_SOFT_FLAGS, e_type=ET_REL)
    assert identify(module, "/x.ko").riscv_abi == "lp64"
    assert runs_on(identify(module, "/lib/modules/x.ko"), get_arch("riscv64"))
    program = make_elf(64, machine=EM_RISCV, flags=RISCV_SOFT_FLAGS, e_type=ET_EXEC)
    assert not runs_on(identify(program, "/x"), get_arch("riscv64"))


def test_i386_program_does_not_fit_an_amd64_image():
    assert not runs_on(identify(make_elf(32, machine=EM_386), "/x"), get_arch("amd64"))


def test_descriptions_and_labels():
    armel = identify(make_elf(32, machine=EM_ARM, flags=ARMEL_FLAGS), "/x")
    assert armel.describe() == "ARM EABI5 soft-float"
    assert armel.target_label() == "armel (ARM EABI5 soft-float)"
    mips_be = identify(make_elf(32, "big", EM_MIPS, flags=MIPS_O32_FLAGS), "/x")
    assert mips_be.describe() == "MIPS o32 big-endian"
    assert "no architecture" in mips_be.target_label()
    assert identify(make_elf(64, machine=EM_AARCH64), "/x").describe() == "AArch64"
    assert identify(make_elf(32, machine=EM_X86_64), "/x").describe() == "x86-64 32-bit"
    riscv = identify(make_elf(64, machine=EM_RISCV, flags=RISCV_LP64D_FLAGS), "/x")
    assert riscv.describe() == "RISC-V lp64d double-float"
    assert riscv.target_label() == "riscv64 (RISC-V lp64d double-float)"
    soft = identify(make_elf(64, machine=EM_RISCV, flags=RISCV_SOFT_FLAGS), "/x")
    assert soft.target_label() == "RISC-V lp64 soft-float (no architecture lxembed supports)"
    rv32 = identify(make_elf(32, machine=EM_RISCV, flags=0x2), "/x")
    assert rv32.describe() == "RISC-V ilp32f single-float 32-bit"


def test_dynamic_fields():
    data = make_elf(
        32,
        machine=EM_ARM,
        flags=ARMHF_FLAGS,
        e_type=ET_EXEC,
        interp="/lib/ld-linux-armhf.so.3",
        needed=["libc.so.6", "libm.so.6"],
        soname="prog",
        rpath="/opt/a:$ORIGIN/lib",
        runpath="/opt/b",
        flags_1=0x800,
    )
    info = identify(data, "/usr/bin/prog")
    assert (info.arm_eabi, info.float_abi, info.elf_type) == (5, "hard", "ET_EXEC")
    assert info.interp == "/lib/ld-linux-armhf.so.3"
    assert info.needed == ("libc.so.6", "libm.so.6")
    assert info.rpath == ("/opt/a", "$ORIGIN/lib") and info.runpath == ("/opt/b",)
    assert info.soname == "prog" and info.nodeflib and not info.is_static
    static = identify(make_elf(64, machine=EM_AARCH64, e_type=ET_EXEC, dynamic=False), "/s")
    assert static.is_static and static.interp is None and not static.has_dynamic


def test_host_binary():
    info = identify(Path("/bin/ls").read_bytes(), "/bin/ls")
    assert info.interp and "libc.so.6" in info.needed
    assert get_arch("amd64") in info.matching_arches()
    assert is_elf(Path("/bin/ls").read_bytes()) and not is_elf(b"#!/bin/sh\n")


# -- malformed files ---------------------------------------------------------------------------
def test_not_elf():
    with pytest.raises(UserError, match="/etc/x is not an ELF file"):
        identify(b"#!/bin/sh\necho hi\n", "/etc/x")


@pytest.mark.parametrize("length", [4, 5, 16, 20, 40, 52, 63, 64, 100, 150])
def test_truncated_header(length):
    data = make_elf(
        64, machine=EM_AARCH64, interp="/lib/ld-linux-aarch64.so.1", needed=["libc.so.6"]
    )
    with pytest.raises(UserError, match=r"/usr/bin/cut"):
        identify(data[:length], "/usr/bin/cut")


@pytest.mark.skipif(HOST_LIB is None, reason="no host libz")
@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_real_library(fraction):
    data = Path(HOST_LIB).read_bytes()
    with pytest.raises(UserError, match="libz.so.1 is a malformed or truncated ELF"):
        identify(data[: int(len(data) * fraction)], "/lib/libz.so.1")


def test_bad_program_header_offset():
    data = bytearray(make_elf(64, machine=EM_AARCH64, needed=["libc.so.6"]))
    struct.pack_into("<Q", data, 32, 0x7FFFFFF0)  # e_phoff far past the end
    with pytest.raises(UserError, match="/bad-phoff"):
        identify(bytes(data), "/bad-phoff")


def test_program_header_count_past_end():
    data = bytearray(make_elf(32, machine=EM_ARM, flags=ARMHF_FLAGS, needed=["libc.so.6"]))
    struct.pack_into("<H", data, 44, 0xFFFF)  # e_phnum
    with pytest.raises(UserError, match="/bad-phnum"):
        identify(bytes(data), "/bad-phnum")


def test_garbage_dynamic_section():
    base = make_elf(64, machine=EM_AARCH64, needed=["libc.so.6", "libm.so.6"])
    dyn_size = 5 * 16
    rng = random.Random(5)
    for _ in range(50):
        data = base[:-dyn_size] + bytes(rng.randrange(256) for _ in range(dyn_size))
        try:
            identify(data, "/garbage-dyn")
        except UserError as err:
            assert "/garbage-dyn" in str(err)


def test_strtab_pointing_nowhere():
    data = bytearray(make_elf(64, machine=EM_AARCH64, needed=["libc.so.6"]))
    # the dynamic array is last: NEEDED, STRTAB, STRSZ, NULL; point DT_STRTAB far away
    strtab_tag = len(data) - 3 * 16
    assert struct.unpack_from("<q", data, strtab_tag)[0] == 5
    struct.pack_into("<Q", data, strtab_tag + 8, 0x40000000)
    with pytest.raises(UserError, match="/bad-strtab"):
        identify(bytes(data), "/bad-strtab")


def test_random_corruption_only_ever_raises_user_error():
    """Flip header bytes of synthetic and real files: a result or a UserError, nothing else."""
    samples = [
        make_elf(
            32,
            "big",
            EM_MIPS,
            flags=MIPS_O32_FLAGS,
            interp="/lib/ld.so.1",
            needed=["libc.so.6"],
            rpath="/x",
        ),
        make_elf(64, machine=EM_AARCH64, needed=["a", "b"], soname="s", runpath="/r"),
    ]
    if HOST_LIB:
        samples.append(Path(HOST_LIB).read_bytes())
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for sample in samples:
        for _ in range(400):
            data = bytearray(sample)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(4, min(len(data), 512))  # keep the magic, hit the headers
                data[pos] = rng.randrange(256)
            if rng.random() < 0.3:
                data = data[: rng.randrange(4, len(data))]
            try:
                identify(bytes(data), "/fuzzed")
                outcomes["ok"] += 1
            except UserError as err:
                assert "/fuzzed" in str(err)
                outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["ok"] > 10
