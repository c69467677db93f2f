"""Minimal ELF files built byte by byte (no compiler), for any machine, and a check of them.

Other ELF tests import `make_elf` from here (as the project's tests import from conftest).
"""

from __future__ import annotations

import io
import struct
from typing import Optional, Sequence

from elftools.elf.elffile import ELFFile

ET_EXEC, ET_DYN, ET_REL = 2, 3, 1
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH = 0, 1, 5, 10, 14, 15
DT_RUNPATH, DT_FLAGS_1 = 29, 0x6FFFFFFB
EM_386, EM_MIPS, EM_ARM, EM_X86_64, EM_AARCH64, EM_RISCV = 3, 8, 40, 62, 183, 243

ARMHF_FLAGS = 0x05000400  # EABI5, hard-float
ARMEL_FLAGS = 0x05000200  # EABI5, soft-float
MIPS_O32_FLAGS = 0x70001007  # mips32r2, o32, pic, cpic, noreorder (legacy NaN)
RISCV_LP64D_FLAGS = 0x5  # compressed instructions (RVC), double-float ABI: Debian's riscv64
RISCV_SOFT_FLAGS = 0x1  # RVC, soft-float ABI (lp64): what the riscv64 kernel is built with


def make_elf(
    elf_class: int = 64,
    endian: str = "little",
    machine: int = EM_X86_64,
    flags: int = 0,
    e_type: int = ET_DYN,
    interp: Optional[str] = None,
    needed: Sequence[str] = (),
    soname: Optional[str] = None,
    rpath: Optional[str] = None,
    runpath: Optional[str] = None,
    flags_1: int = 0,
    osabi: int = 0,
    dynamic: bool = True,
) -> bytes:
    """A loadable ELF: one PT_LOAD over the whole file, optional PT_INTERP and PT_DYNAMIC."""
    e = "<" if endian == "little" else ">"
    word = "I" if elf_class == 32 else "Q"
    ehsize, phentsize = (52, 32) if elf_class == 32 else (64, 56)
    dyn_fmt = e + ("iI" if elf_class == 32 else "qQ")
    strings = bytearray(b"\0")

    def string(s: str) -> int:
        start = len(strings)
        strings.extend(s.encode() + b"\0")
        return start

    tags = [(DT_NEEDED, string(n)) for n in needed]
    for tag, value in ((DT_SONAME, soname), (DT_RPATH, rpath), (DT_RUNPATH, runpath)):
        if value is not None:
            tags.append((tag, string(value)))
    if flags_1:
        tags.append((DT_FLAGS_1, flags_1))
    has_dyn = dynamic and e_type in (ET_EXEC, ET_DYN)
    phnum = 1 + (interp is not None) + has_dyn
    offset = ehsize + phnum * phentsize
    interp_bytes = interp.encode() + b"\0" if interp is not None else b""
    interp_off = offset
    strtab_off = interp_off + len(interp_bytes)
    dyn_off = (strtab_off + len(strings) + 7) & ~7
    tags += [(DT_STRTAB, strtab_off), (DT_STRSZ, len(strings)), (DT_NULL, 0)]
    dyn = b"".join(struct.pack(dyn_fmt, t, v) for t, v in tags) if has_dyn else b""
    size = dyn_off + len(dyn)

    def phdr(ptype: int, off: int, filesz: int, pflags: int = 4) -> bytes:
        if elf_class == 32:
            return struct.pack(e + "8I", ptype, off, off, off, filesz, filesz, pflags, 4)
        return struct.pack(e + "IIQQQQQQ", ptype, pflags, off, off, off, filesz, filesz, 8)

    phdrs = phdr(PT_LOAD, 0, size, 5)
    if interp is not None:
        phdrs += phdr(PT_INTERP, interp_off, len(interp_bytes))
    if has_dyn:
        phdrs += phdr(PT_DYNAMIC, dyn_off, len(dyn), 6)
    ident = b"\x7fELF" + bytes([1 if elf_class == 32 else 2, 1 if endian == "little" else 2, 1])
    ident += bytes([osabi]) + b"\0" * 8
    header = ident + struct.pack(
        e + "HHI" + word * 3 + "IHHHHHH",
        e_type,
        machine,
        1,
        0,
        ehsize,
        0,
        flags,
        ehsize,
        phentsize,
        phnum,
        0,
        0,
        0,
    )
    body = header + phdrs + interp_bytes + bytes(strings)
    body += b"\0" * (dyn_off - len(body)) + dyn
    assert len(body) == size
    return body


def test_pyelftools_reads_the_synthetic_files():
    for cls, endian, machine in (
        (64, "little", EM_AARCH64),
        (32, "big", EM_MIPS),
        (32, "little", EM_ARM),
    ):
        data = make_elf(
            cls,
            endian,
            machine,
            interp="/lib/ld.so.1",
            needed=["liba.so.1"],
            soname="libx.so.2",
            runpath="$ORIGIN/../lib",
        )
        elf = ELFFile(io.BytesIO(data))
        assert elf.elfclass == cls and elf.little_endian == (endian == "little")
        interp = next(s for s in elf.iter_segments() if s["p_type"] == "PT_INTERP")
        assert interp.get_interp_name() == "/lib/ld.so.1"
        dyn = next(s for s in elf.iter_segments() if s["p_type"] == "PT_DYNAMIC")
        tags = {t.entry.d_tag: t for t in dyn.iter_tags()}
        assert tags["DT_NEEDED"].needed == "liba.so.1"
        assert tags["DT_SONAME"].soname == "libx.so.2"
        assert tags["DT_RUNPATH"].runpath == "$ORIGIN/../lib"
