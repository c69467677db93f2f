"""A kernel as lxembed uses it (the Kernel record) and a kernel .deb unpacked into the cache:
vmlinuz, config, /lib/modules, device trees, and x86's ELF vmlinux for a direct boot. Debian's
kernels (sources/kernel.py) and a board's own (sources/vendor_kernel.py) both end here."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..compression import decompress_embedded
from ..config import Board
from ..errors import UserError
from ..log import info
from .apt import Deb
from .deb import open_data_tar

_ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class Kernel:
    """One unpacked Debian kernel."""

    package: str  # the versioned image package, e.g. linux-image-6.1.0-28-arm64
    version: str  # its Debian version, e.g. 6.1.119-1
    meta: str  # the meta-package the board names, e.g. linux-image-arm64
    arch: str  # Debian architecture of the kernel
    release: str  # `uname -r`, the directory under /lib/modules
    image: Path  # /boot/vmlinuz-KVER as shipped (Image, zImage, bzImage or ELF)
    vmlinux: Optional[Path]  # x86: the ELF inside the bzImage, for a direct (PVH) boot
    modules: Path  # the unpacked /lib/modules/KVER
    dtbs: Optional[Path] = None  # the package's device trees (usr/lib/linux-image-KVER/)
    config: Optional[Path] = None  # its .config, where known (a board's own kernel)
    digest: str = ""  # a board's own kernel: SHA256 over its files (no archive pins it)

    def dtb(self, name: str) -> Path:
        """One device tree, by its path in the dtb directory (broadcom/bcm2837-rpi-3-b.dtb)."""
        path = self.dtbs / name if self.dtbs is not None else None
        if path is None or ".." in name.split("/") or not path.is_file():
            raise UserError(f"{self.package} has no device tree {name}")
        return path

    def pin(self) -> Dict[str, Any]:
        """What to record so a run can be repeated: names and versions, no host paths."""
        pin = {
            "package": self.package,
            "version": self.version,
            "meta": self.meta,
            "arch": self.arch,
            "release": self.release,
        }
        return {**pin, "sha256": self.digest} if self.digest else pin

    def as_dict(self) -> Dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def kernel_arch(board: Board) -> str:
    """Debian arch of the board's kernel (the armel board boots the armhf kernel)."""
    qemu = board.qemu or {}
    return qemu.get("kernel_arch") or board.arch.kernel_arch


def unpacked_pin(root: Path) -> Optional[Dict[str, Any]]:
    """The pin of a kernel unpacked in the cache, None if absent or damaged (unpack again)."""
    try:
        data = json.loads((root / "kernel.json").read_text())
        files = [data["image"]] + ([data["vmlinux"]] if data.get("vmlinux") else [])
        whole = all((root / f).is_file() for f in files)
        whole = whole and (root / "lib" / "modules" / data["release"]).is_dir()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if whole else None


def _unpack_dtbs(deb: Deb, root: Path) -> None:
    """Add the package's device trees to an unpacked kernel as root/dtbs (maybe empty)."""
    tmp = Path(tempfile.mkdtemp(prefix=".dtbs.", dir=root))
    try:
        with open_data_tar(deb.path) as tar:
            for member in tar:
                parts = member.name.lstrip("./").split("/", 3)
                if (member.isreg() and len(parts) == 4 and parts[:2] == ["usr", "lib"]
                        and parts[2].startswith("linux-image-") and ".." not in parts[3]):
                    dest = tmp / parts[3]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
        os.rename(tmp, root / "dtbs")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _unpack(deb: Deb, root: Path, meta: str) -> None:
    """Unpack /boot/vmlinuz-*, /boot/config-* and /lib/modules/ into `root`, atomically."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        image, release = None, None
        with open_data_tar(deb.path) as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if name.startswith("usr/lib/modules/"):
                    name = name[4:]  # merged-/usr packages: keep one layout in the cache
                keep = name.startswith(
                    ("boot/vmlinuz-", "boot/vmlinux-", "boot/config-", "lib/modules/")
                )
                if not keep or ".." in name.split("/"):
                    continue
                dest = tmp / name
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif member.isreg():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    if name.startswith(("boot/vmlinuz-", "boot/vmlinux-")):
                        image, release = name, name.split("-", 1)[1]
                elif member.issym():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(member.linkname, dest)
        if image is None:
            raise UserError(f"{deb.path.name}: no /boot/vmlinuz-* in the package")
        vmlinux = None
        if deb.arch in ("amd64", "i386"):
            elf = extract_vmlinux((tmp / image).read_bytes())
            if elf is not None and has_pvh_entry(elf):
                vmlinux = f"boot/vmlinux-{release}"
                (tmp / vmlinux).write_bytes(elf)
        pin = {
            "package": deb.name,
            "version": deb.version,
            "meta": meta,
            "arch": deb.arch,
            "release": release,
            "image": image,
            "vmlinux": vmlinux,
        }
        (tmp / "kernel.json").write_text(json.dumps(pin, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.rename(tmp, root)
        _unpack_dtbs(deb, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info(f"kernel {deb.name} {deb.version}: {release}")


# Compressed payloads a bzImage may carry, as scripts/extract-vmlinux searches for them.
_PAYLOADS = (
    (b"\x1f\x8b\x08", "gz"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zst"),
    (b"\x5d\x00\x00", "lzma"),
)


def extract_vmlinux(bzimage: bytes) -> Optional[bytes]:
    """The ELF vmlinux inside an x86 bzImage, or None (then boot the bzImage itself).

    Loaded with -kernel, an ELF with a PVH note starts in 64-bit mode directly: no real-mode
    setup, no self-decompression -- about 2 s less to ready under TCG (see FACTS.md).
    """
    for magic, kind in _PAYLOADS:
        start = bzimage.find(magic)
        while start != -1:
            elf = decompress_embedded(bzimage[start:], kind)
            if elf is not None and elf.startswith(_ELF_MAGIC):
                return elf
            start = bzimage.find(magic, start + 1)
    return None


def has_pvh_entry(elf: bytes) -> bool:
    """True if the ELF carries the Xen PVH entry note qemu needs to start it directly
    (CONFIG_PVH: the amd64 kernel has it, the 686 one does not)."""
    try:
        for segment in ELFFile(io.BytesIO(elf)).iter_segments():
            if segment.header.p_type != "PT_NOTE":
                continue
            for note in segment.iter_notes():
                # XEN_ELFNOTE_PHYS32_ENTRY; pyelftools names unknown Xen note types by number.
                if note.n_name == "Xen" and note.n_type in (18, "XEN_ELFNOTE_PHYS32_ENTRY"):
                    return True
    except ELFError:
        return False
    return False
