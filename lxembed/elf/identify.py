"""Identify an ELF file (machine, ABI, loader, libraries) and tell which architectures run it."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, List, Optional, Tuple, Union

from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE, ENUM_EI_OSABI

from ..arch import ARCHES, EM_386, EM_AARCH64, EM_ARM, EM_MIPS, EM_RISCV, EM_X86_64, Arch
from ..errors import UserError

ELF_MAGIC = b"\x7fELF"

# Objects no CPU runs directly: e_machine 0 (EM_NONE) and eBPF programs loaded into the kernel.
EM_NONE = 0
EM_BPF = 247
ARCH_INDEPENDENT_MACHINES = frozenset({EM_NONE, EM_BPF})

# Linux runs objects marked SYSV (almost everything) or GNU/Linux (objects using GNU extensions).
LINUX_OSABIS = frozenset({"ELFOSABI_SYSV", "ELFOSABI_LINUX"})

# ARM e_flags (ARM ELF ABI, "ELF header e_flags").
EF_ARM_EABIMASK = 0xFF000000
EF_ARM_ABI_FLOAT_SOFT = 0x200
EF_ARM_ABI_FLOAT_HARD = 0x400

# MIPS e_flags (binutils include/elf/mips.h).
EF_MIPS_ABI2 = 0x20  # n32
EF_MIPS_NAN2008 = 0x400
EF_MIPS_ABI = 0xF000
_MIPS_ABI_FIELD = {0x1000: "o32", 0x2000: "o64", 0x3000: "eabi32", 0x4000: "eabi64"}

# RISC-V e_flags (RISC-V ELF psABI, "e_flags"): the float ABI of the calling convention.
EF_RISCV_FLOAT_ABI = 0x6
_RISCV_FLOAT_ABI = {0x0: "", 0x2: "f", 0x4: "d", 0x6: "q"}  # soft, single, double, quad
EF_RISCV_RVE = 0x8  # the embedded base ISA (16 registers): ilp32e / lp64e

_MACHINE_NAMES = {
    EM_NONE: "no machine",
    EM_386: "x86",
    EM_MIPS: "MIPS",
    EM_ARM: "ARM",
    EM_X86_64: "x86-64",
    EM_AARCH64: "AArch64",
    EM_RISCV: "RISC-V",
    EM_BPF: "eBPF",
}

_USUAL_CLASS = {EM_386: 32, EM_ARM: 32, EM_X86_64: 64, EM_AARCH64: 64, EM_RISCV: 64}


@dataclass(frozen=True)
class ElfInfo:
    """What the kernel and the dynamic loader look at in one ELF file."""

    name: str
    elf_class: int  # 32 or 64
    endian: str  # "little" or "big"
    machine: int  # e_machine
    osabi: str  # e.g. "ELFOSABI_SYSV"
    elf_type: str  # "ET_EXEC", "ET_DYN", "ET_REL", "ET_CORE"
    flags: int  # e_flags
    arm_eabi: Optional[int] = None  # ARM EABI version (5 for Debian armel/armhf), 0 = old ABI
    float_abi: Optional[str] = None  # ARM: "hard" or "soft"
    mips_abi: Optional[str] = None  # MIPS: "o32", "n32", "n64" (or "o64", "eabi32", "eabi64")
    mips_nan: Optional[str] = None  # MIPS: "legacy" or "2008"
    riscv_abi: Optional[str] = None  # RISC-V: "lp64d", "lp64f", "lp64", "ilp32d", "lp64e"...
    interp: Optional[str] = None  # PT_INTERP: the dynamic loader the kernel starts
    needed: Tuple[str, ...] = ()  # DT_NEEDED, in order
    rpath: Tuple[str, ...] = ()  # DT_RPATH entries
    runpath: Tuple[str, ...] = ()  # DT_RUNPATH entries
    soname: Optional[str] = None
    has_dynamic: bool = False  # a PT_DYNAMIC segment exists
    nodeflib: bool = False  # DF_1_NODEFLIB: the default library directories are not searched

    @property
    def is_static(self) -> bool:
        """Needs neither a dynamic loader nor any library (static and static-pie programs)."""
        return self.interp is None and not self.needed

    @property
    def machine_name(self) -> str:
        return _MACHINE_NAMES.get(self.machine, f"e_machine {self.machine}")

    @property
    def arch_independent(self) -> bool:
        return self.machine in ARCH_INDEPENDENT_MACHINES

    def describe(self) -> str:
        """A short technical description: "ARM EABI5 soft-float", "MIPS o32 big-endian"."""
        words = [self.machine_name]
        if self.machine == EM_ARM:
            words.append(f"EABI{self.arm_eabi}" if self.arm_eabi else "old ABI (OABI)")
            words.append(f"{self.float_abi}-float")
        elif self.machine == EM_MIPS:
            words.append(self.mips_abi or "unknown ABI")
        elif self.machine == EM_RISCV:
            words.append(_riscv_abi_words(self.riscv_abi))
        if self.machine != EM_MIPS and _USUAL_CLASS.get(self.machine) != self.elf_class:
            words.append(f"{self.elf_class}-bit")
        if self.endian == "big" or self.machine == EM_MIPS:
            words.append(f"{self.endian}-endian")
        if self.mips_nan == "2008":
            words.append("NaN2008")
        return " ".join(words)

    def matching_arches(self) -> List[Arch]:
        """Every architecture in the table this ELF runs on (all of them if arch-independent)."""
        return [arch for arch in ARCHES.values() if runs_on(self, arch)]

    def target_label(self) -> str:
        """ "armel (ARM EABI5 soft-float)", or the description alone when no arch matches."""
        if self.arch_independent:
            return f"any architecture ({self.describe()})"
        arches = self.matching_arches()
        if not arches:
            return f"{self.describe()} (no architecture lxembed supports)"
        return f"{'/'.join(a.debian for a in arches)} ({self.describe()})"


def runs_on(info: ElfInfo, arch: Arch) -> bool:
    """True if the board's kernel and loader run (or load) this object.

    Exact match on class, endianness and machine: a 32-bit x86 program is refused on amd64
    on purpose (an image holds one architecture). Userland objects must also match the ARM
    float ABI and the MIPS ABI/NaN mode, as glibc's loader checks them.
    """
    if info.arch_independent:
        return True
    if (info.elf_class, info.endian, info.machine) != (
        arch.elf_class,
        arch.elf_endian,
        arch.elf_machine,
    ):
        return False
    if info.osabi not in LINUX_OSABIS:
        return False
    if arch.mips_abi and info.mips_abi != arch.mips_abi:
        return False
    if info.elf_type in ("ET_REL", "ET_CORE"):
        # Kernel modules are built soft-float without NaN flags even for armhf: the float ABI
        # is a userland contract between the program, its libraries and the loader.
        return True
    if arch.float_abi:
        if not info.arm_eabi:  # Debian kernels have no OABI compatibility
            return False
        if info.float_abi != arch.float_abi:
            return False
    if arch.riscv_abi and info.riscv_abi != arch.riscv_abi:
        # glibc's RISC-V loader refuses a library of another float ABI (elf_machine_matches_host)
        return False
    if info.machine == EM_MIPS:
        # Debian's MIPS ports use legacy NaN encoding; the table grows a field if that changes.
        if info.mips_nan != arch.mips_nan:
            return False
    return True


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def identify(data: Union[bytes, BinaryIO], name: str, *, dynamic: bool = True) -> ElfInfo:
    """Parse an ELF file; any malformed or truncated file is a UserError naming it.

    `dynamic=False` reads only the ELF header (enough for architecture checks).
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    head = stream.read(4)
    stream.seek(0)
    if head != ELF_MAGIC:
        raise UserError(f"{name} is not an ELF file")
    _check_bounds(stream, name)
    try:
        return _parse(ELFFile(stream), stream, name, dynamic)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        # Hostile or damaged input makes pyelftools (and its bundled construct) raise many
        # exception types: ELFError, struct.error, ValueError, IndexError, KeyError...
        # Every one of them means the same thing to the user.
        detail = str(exc).strip() or type(exc).__name__
        raise UserError(f"{name} is a malformed or truncated ELF file: {detail}") from None


def _check_bounds(stream: BinaryIO, name: str) -> None:
    """Clear messages for the common damage (cut-off files) before pyelftools sees them."""
    size = _file_size(stream)
    ident = stream.read(16)
    stream.seek(0)
    bad = f"{name} is a malformed or truncated ELF file: "
    if len(ident) < 16:
        raise UserError(bad + f"only {size} bytes, shorter than an ELF header")
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise UserError(bad + f"bad class/data bytes {ident[4]}/{ident[5]} in e_ident")
    is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
    header = stream.read(64 if is64 else 52)
    stream.seek(0)
    if len(header) < (64 if is64 else 52):
        raise UserError(bad + f"only {size} bytes, shorter than an ELF header")
    fmt = endian + ("16xHHIQQQIHHHHHH" if is64 else "16xHHIIIIIHHHHHH")
    _, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = struct.unpack(
        fmt, header
    )
    if phnum and phoff + phnum * phentsize > size:
        raise UserError(
            bad + f"the program header table ({phnum} entries at byte {phoff}) "
            f"reaches past the end of the file ({size} bytes)"
        )
    if shnum and shoff + shnum * shentsize > size:
        raise UserError(
            bad + f"the section header table ({shnum} entries at byte {shoff}) "
            f"reaches past the end of the file ({size} bytes)"
        )


def _file_size(stream: BinaryIO) -> int:
    here = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(here)
    return size


def _parse(elf: ELFFile, stream: BinaryIO, name: str, dynamic: bool) -> ElfInfo:
    header = elf.header
    machine = header["e_machine"]
    machine = ENUM_E_MACHINE.get(machine, 0) if isinstance(machine, str) else int(machine)
    osabi = header["e_ident"]["EI_OSABI"]
    if not isinstance(osabi, str):
        names = {v: k for k, v in ENUM_EI_OSABI.items()}
        osabi = names.get(osabi, f"ELFOSABI_{osabi}")
    elf_type = header["e_type"]
    elf_type = elf_type if isinstance(elf_type, str) else f"ET_{elf_type:#x}"
    flags = int(header["e_flags"])
    fields = dict(
        name=name,
        elf_class=elf.elfclass,
        endian="little" if elf.little_endian else "big",
        machine=machine,
        osabi=osabi,
        elf_type=elf_type,
        flags=flags,
    )
    if machine == EM_ARM:
        fields["arm_eabi"] = (flags & EF_ARM_EABIMASK) >> 24
        # EABI5 objects without either float flag (hand-written assembly) follow the base
        # (soft-float) procedure call standard.
        fields["float_abi"] = "hard" if flags & EF_ARM_ABI_FLOAT_HARD else "soft"
    elif machine == EM_MIPS:
        fields["mips_abi"] = _mips_abi(elf.elfclass, flags)
        fields["mips_nan"] = "2008" if flags & EF_MIPS_NAN2008 else "legacy"
    elif machine == EM_RISCV:
        fields["riscv_abi"] = _riscv_abi(elf.elfclass, flags)
    if dynamic and header["e_type"] in ("ET_EXEC", "ET_DYN"):
        fields.update(_dynamic_fields(elf, name, _file_size(stream)))
    return ElfInfo(**fields)


def _mips_abi(elf_class: int, flags: int) -> str:
    if elf_class == 64:
        return "n64"
    if flags & EF_MIPS_ABI2:
        return "n32"
    return _MIPS_ABI_FIELD.get(flags & EF_MIPS_ABI, "o32")


def _riscv_abi(elf_class: int, flags: int) -> str:
    base = ("ilp32" if elf_class == 32 else "lp64") + ("e" if flags & EF_RISCV_RVE else "")
    return base + _RISCV_FLOAT_ABI[flags & EF_RISCV_FLOAT_ABI]


def _riscv_abi_words(abi: Optional[str]) -> str:
    """ "lp64d double-float", "lp64 soft-float": the ABI name and what it means."""
    if not abi:
        return "unknown ABI"
    kind = {"d": "double-float", "f": "single-float", "q": "quad-float"}.get(abi[-1],
                                                                           "soft-float")
    return f"{abi} {kind}"


def _dynamic_fields(elf: ELFFile, name: str, size: int) -> dict:
    """PT_INTERP and the dynamic section, read through program headers as the loader does."""
    out: dict = {}
    needed: List[str] = []
    for index, segment in enumerate(elf.iter_segments()):
        ptype = segment["p_type"]
        if ptype not in ("PT_LOAD", "PT_INTERP", "PT_DYNAMIC"):
            continue
        if segment["p_offset"] + segment["p_filesz"] > size:
            raise UserError(
                f"{name} is a malformed or truncated ELF file: program header "
                f"{index} ({ptype}) reaches past the end of the file ({size} bytes)"
            )
        if ptype == "PT_INTERP":
            interp = segment.get_interp_name()
            if not interp or not interp.startswith("/"):
                raise UserError(f"{name} is a malformed ELF file: bad PT_INTERP {interp!r}")
            out["interp"] = interp
        elif ptype == "PT_DYNAMIC":
            out["has_dynamic"] = True
            for tag in segment.iter_tags():
                kind = tag.entry.d_tag
                if kind == "DT_NEEDED":
                    needed.append(_tag_string(tag, "needed", name))
                elif kind == "DT_RPATH":
                    out["rpath"] = tuple(p for p in _tag_string(tag, "rpath", name).split(":"))
                elif kind == "DT_RUNPATH":
                    out["runpath"] = tuple(p for p in _tag_string(tag, "runpath", name).split(":"))
                elif kind == "DT_SONAME":
                    out["soname"] = _tag_string(tag, "soname", name)
                elif kind == "DT_FLAGS_1":
                    out["nodeflib"] = bool(tag.entry.d_val & 0x800)  # DF_1_NODEFLIB
    out["needed"] = tuple(needed)
    return out


def _tag_string(tag, attribute: str, name: str) -> str:
    value = getattr(tag, attribute, None)
    if not isinstance(value, str) or not value:
        raise UserError(
            f"{name} is a malformed ELF file: {tag.entry.d_tag} has no valid string "
            "(the dynamic string table is missing or damaged)"
        )
    return value
