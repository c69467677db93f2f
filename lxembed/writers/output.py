"""Write the requested formats into an output directory, each atomically (temp + rename)."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import zstandard

from ..compression import compressed_memo
from ..errors import UserError
from ..log import progress
from ..paths import file_sha256
from ..tree import RootfsTree
from .cpio import write_cpio
from .directory import write_dir
from .disk import DISK_FORMATS, BootInputs, write_boot_initramfs, write_disk
from .ext4 import Ext4Options, write_ext4
from .firmware import write_firmware_disk, write_slot
from .firmware_ubi import kernel_volume, root_volume, write_firmware_ubi, write_ubi_slot
from .fit import write_fit
from .flash import FlashGeometry
from .jffs2 import write_jffs2
from .manifest import manifest
from .sdcard import write_sdcard
from .squashfs import SquashfsOptions, write_squashfs
from .swu import SwuInputs, write_swu
from .tar import write_tar
from .ubi import write_ubi

ZSTD_LEVEL = 19


@dataclass
class Artifact:
    format: str
    path: str
    bytes: int
    sha256: str

    def as_dict(self) -> dict:
        return asdict(self)


class _HashingFile:
    """A write-only file that hashes and counts what passes through."""

    def __init__(self, fh):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size

    def skip(self, n: int) -> None:
        """`n` zero bytes, left as a hole in the file (hashed all the same)."""
        zeros = bytes(min(n, 1 << 22))
        left = n
        while left:
            self.sha.update(zeros[:min(left, len(zeros))])
            left -= min(left, len(zeros))
        self.size += n
        self.fh.seek(n, 1)

    def flush(self) -> None:
        self.fh.flush()


def _stream(serialise: Callable, tree: RootfsTree, compression: str, fh) -> None:
    if compression == "zst":
        raw = bytearray()

        class _Buf:
            def write(self, data):
                raw.extend(data)
                return len(data)

            def tell(self):
                return len(raw)

        serialise(tree, _Buf())
        fh.write(_zstd_cached(bytes(raw)))
    elif compression == "xz":
        # CRC32 check: the kernel's initramfs xz decoder knows no other.
        with lzma.LZMAFile(fh, "wb", check=lzma.CHECK_CRC32,
                           preset=9 | lzma.PRESET_EXTREME) as xz:
            serialise(tree, _TellWrapper(xz))
    elif compression == "gz":
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9) as gz:
            serialise(tree, _TellWrapper(gz))
    else:
        serialise(tree, fh)


def _zstd_cached(raw: bytes) -> bytes:
    """Level-19 zstd, remembered by content hash: an unchanged image is not compressed again.

    One-shot compression puts the content size in the frame header; the output depends only on
    the input and the level, so the cache cannot change what a build produces.
    """
    return compressed_memo(raw, f"zstd{ZSTD_LEVEL}", "zst",
                           zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress)


class _TellWrapper:
    def __init__(self, fh):
        self.fh, self.n = fh, 0

    def write(self, data):
        self.n += len(data)
        return self.fh.write(data)

    def tell(self):
        return self.n


_SERIALISERS = {"tar": write_tar, "cpio": write_cpio}


def _epoch(tree: RootfsTree, plan) -> int:
    return plan.epoch if plan is not None else max(e.mtime for _, e in tree)


def _identity(plan, name: str) -> str:
    """What an image's fixed identifiers (filesystem UUIDs) are derived from."""
    return f"{plan.board.name}/{plan.recipe.name}/{name}" if plan is not None else name


def _recipe_table(plan, key: str) -> Optional[dict]:
    return plan.recipe.settings.get(key) if plan is not None else None


# Filesystem images made by a real mkfs tool: fn(tree, fh, plan, name) writes the image to fh.
_FILESYSTEMS: Dict[str, Callable] = {
    "squashfs": lambda tree, fh, plan, name: write_squashfs(
        tree, fh, _epoch(tree, plan), SquashfsOptions.from_recipe(_recipe_table(plan, "squashfs"))),
    "ext4": lambda tree, fh, plan, name: write_ext4(
        tree, fh, _epoch(tree, plan), _identity(plan, name),
        Ext4Options.from_recipe(_recipe_table(plan, "ext4"))),
    "jffs2": lambda tree, fh, plan, name: write_jffs2(
        tree, fh, _flash(plan, "jffs2"), plan.arch.elf_endian == "big"),
    "ubi": lambda tree, fh, plan, name: write_ubi(
        tree, fh, _flash(plan, "ubi"), _identity(plan, name), _epoch(tree, plan),
        (_recipe_table(plan, "ubi") or {}).get("compressor", "lzo")),
}


def _flash(plan, fmt: str) -> FlashGeometry:
    return FlashGeometry.from_board(plan.board if plan is not None else None, fmt)


def known_formats() -> List[str]:
    archives = [f"{s}{c}" for s in _SERIALISERS for c in ("", ".zst", ".gz", ".xz")]
    return ["dir"] + archives + sorted(_FILESYSTEMS) + list(DISK_FORMATS) + ["fit", "firmware"]


def check_formats(formats: Sequence[str], also: Sequence[str] = ()) -> None:
    """Refuse a format no writer knows; `also`: formats made elsewhere (container bundles)."""
    known = known_formats() + list(also)
    bad = [f for f in formats if f not in known]
    if bad:
        raise UserError(f"unknown format {', '.join(bad)} (known: {', '.join(known)})")


def write_file_atomic(path: Path, writer: Callable) -> Artifact:
    """Run `writer(fh)` into a temp file beside `path`, then rename: never a half image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            fh = _HashingFile(raw)
            writer(fh)
            raw.truncate(fh.size)  # a hole at the end (skip) is still the file's length
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return Artifact("", str(path), fh.size, fh.sha.hexdigest())


def replace_dir_atomic(dest: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory next to `dest` and swap it in; the old one stays until the end."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, root).encode())
            # Regular files only: opening a FIFO (/run/initctl) would wait for a writer.
            if stat.S_ISREG(os.lstat(p).st_mode):
                with open(p, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def write_formats(tree: RootfsTree, output: Path, formats: Sequence[str], plan=None,
                  meta: Optional[dict] = None, name: str = "rootfs",
                  boot: Optional[BootInputs] = None) -> List[Artifact]:
    """Write `tree` as NAME.FORMAT (NAME/ for dir) plus its manifest, each atomically.

    `boot`: what the disk and sdcard formats need besides the tree (the kernel's modules, boot
    firmware).
    """
    check_formats(formats)
    output = Path(output)
    artifacts = []
    with progress("write", len(formats)) as advance:
        for fmt in formats:
            artifacts += _write_one(tree, output, fmt, plan, name, boot or BootInputs())
            advance()
    manifest_name = "manifest.json" if name == "rootfs" else f"{name}.manifest.json"
    art = write_file_atomic(output / manifest_name,
                            lambda fh: fh.write(manifest(tree, meta or {})))
    art.format = "manifest" if name == "rootfs" else f"{name}.manifest"
    artifacts.append(art)
    return artifacts


def _write_disk(tree: RootfsTree, output: Path, fmt: str, plan, name: str,
                boot: BootInputs) -> List[Artifact]:
    """The disk image and, beside it, the initramfs that boots from it (DISK.initrd)."""
    if fmt == "sdcard":
        return [_write_sdcard(tree, output, plan, name, boot)]
    modules = boot.modules
    fstype = fmt.partition(".")[2]
    epoch = _epoch(tree, plan)
    disk = write_file_atomic(output / f"{name}.{fmt}", lambda fh: write_disk(
        tree, fh, fstype, _identity(plan, name), epoch, modules,
        Ext4Options.from_recipe(_recipe_table(plan, "ext4")),
        SquashfsOptions.from_recipe(_recipe_table(plan, "squashfs"))))
    initrd = write_file_atomic(output / f"{name}.{fmt}.initrd", lambda fh: write_boot_initramfs(
        tree, fh, fstype, epoch, modules))
    disk.format, initrd.format = fmt, f"{fmt}.initrd"
    return [disk, initrd]


def _write_sdcard(tree: RootfsTree, output: Path, plan, name: str,
                  boot: BootInputs) -> Artifact:
    sdcard = plan.board.settings.get("sdcard") if plan is not None else None
    if sdcard is None:
        board = plan.board.name if plan is not None else "this board"
        raise UserError(f"{board}: no [sdcard] table: the sdcard format needs the board's card "
                        "layout", hint="boards with one: rpi3-arm64; qemu boards: disk.ext4")
    art = write_file_atomic(output / f"{name}.sdcard", lambda fh: write_sdcard(
        tree, fh, sdcard, _identity(plan, name), _epoch(tree, plan), boot,
        Ext4Options.from_recipe(_recipe_table(plan, "ext4"))))
    art.format = "sdcard"
    return art


def _write_fit(tree: RootfsTree, output: Path, plan, name: str,
               boot: BootInputs) -> List[Artifact]:
    """NAME.fit and, when it is signed, NAME.fit.key.dtb (the public key for U-Boot)."""
    if boot.fit is None:
        board = plan.board.name if plan is not None else "this board"
        raise UserError(f"{board}: no [uboot] table: the fit format needs the board's U-Boot "
                        "load addresses", hint="docs/formats.md: which boards have one")
    description = f"lxembed {plan.board.name}/{plan.recipe.name}" if plan is not None else name
    key_dtb = []
    fit = write_file_atomic(output / f"{name}.fit", lambda fh: key_dtb.append(write_fit(
        tree, boot.modules, fh, boot.fit, _epoch(tree, plan), description)))
    fit.format = "fit"
    if key_dtb[0] is None:
        return [fit]
    key = write_file_atomic(output / f"{name}.fit.key.dtb", lambda fh: fh.write(key_dtb[0]))
    key.format = "fit.key.dtb"
    return [fit, key]


def _write_firmware(tree: RootfsTree, output: Path, plan, name: str,
                    boot: BootInputs) -> List[Artifact]:
    """NAME.firmware (the A/B disk), NAME.swu (the update bundle of the same image) and, when
    the FIT is signed, NAME.fit.key.dtb (U-Boot's key)."""
    fw, fit = boot.firmware, boot.fit
    epoch, identity = _epoch(tree, plan), _identity(plan, name)
    description = f"lxembed {plan.board.name}/{plan.recipe.name} {fw.version}"
    if fw.nand:
        return _write_firmware_ubi(tree, output, plan, name, boot, description)
    with tempfile.TemporaryDirectory(prefix="lxembed-slot-", dir=output) as tmp:
        slot = Path(tmp, "slot.ext4")
        key_dtb = write_slot(tree, boot.modules, fit, fw, epoch, identity, description, slot)
        disk = write_file_atomic(output / f"{name}.firmware", lambda fh: write_firmware_disk(
            slot, fw, plan.arch.uboot, fit.fdt is not None, identity, epoch, fh))
        disk.format = "firmware"
        artifacts = [disk]
        artifacts.append(_write_bundle(slot, fw, plan, output / f"{name}.swu", epoch))
    if key_dtb is not None:
        key = write_file_atomic(output / f"{name}.fit.key.dtb", lambda fh: fh.write(key_dtb))
        key.format = "fit.key.dtb"
        artifacts.append(key)
    return artifacts


def _write_firmware_ubi(tree: RootfsTree, output: Path, plan, name: str, boot: BootInputs,
                        description: str) -> List[Artifact]:
    """NAND: NAME.firmware.ubi (the A/B layout as UBI volumes), NAME.swu (the bundle that
    writes the other slot's volumes) and, when the FIT is signed, NAME.fit.key.dtb."""
    fw, epoch = boot.firmware, _epoch(tree, plan)
    with tempfile.TemporaryDirectory(prefix="lxembed-slot-", dir=output) as tmp:
        slot = write_ubi_slot(tree, boot.modules, boot.fit, fw, epoch, description,
                              SquashfsOptions.from_recipe(_recipe_table(plan, "squashfs")),
                              Path(tmp))
        image = write_file_atomic(output / f"{name}.firmware.ubi", lambda fh: write_firmware_ubi(
            slot, fw, _flash(plan, "firmware"), boot.fit.fdt is not None,
            _identity(plan, name), epoch, fh))
        image.format = "firmware.ubi"
        artifacts = [image, _write_bundle(slot.root, fw, plan, output / f"{name}.swu", epoch,
                                          slot.fit)]
    if slot.key_dtb is not None:
        key = write_file_atomic(output / f"{name}.fit.key.dtb", lambda fh: fh.write(slot.key_dtb))
        key.format = "fit.key.dtb"
        artifacts.append(key)
    return artifacts


def _write_bundle(slot: Path, fw, plan, path: Path, epoch: int,
                  kernel: Optional[Path] = None) -> Artifact:
    """The signed SWUpdate bundle that installs this slot image into either slot."""
    # NAND (`kernel`: the FIT): the slots are UBI volumes, written by swupdate's ubivol.
    slots = ({s: root_volume(s) for s in ("A", "B")} if kernel is not None
             else {"A": fw.partition("a"), "B": fw.partition("b")})
    inputs = SwuInputs(image=slot, version=fw.version, board=plan.board.name, slots=slots,
                       kernel=kernel, kernel_volumes={s: kernel_volume(s) for s in ("A", "B")},
                       key=fw.key / f"{fw.key.name}.key", cert=fw.key / f"{fw.key.name}.crt",
                       tries=fw.tries, epoch=epoch, slot_bytes=fw.slot_size,
                       where=plan.recipe.line_of("key", "firmware"))
    bundle = write_swu(inputs, path)
    return Artifact("swu", str(path), bundle.bytes, file_sha256(path))


def _write_one(tree: RootfsTree, output: Path, fmt: str, plan, name: str,
               boot: Optional[BootInputs] = None) -> List[Artifact]:
    if fmt == "firmware":
        return _write_firmware(tree, output, plan, name, boot or BootInputs())
    if fmt == "fit":
        return _write_fit(tree, output, plan, name, boot or BootInputs())
    if fmt in DISK_FORMATS:
        return _write_disk(tree, output, fmt, plan, name, boot or BootInputs())
    if fmt == "dir":
        dest = output / name
        replace_dir_atomic(dest, lambda tmp: write_dir(tree, tmp))
        label = fmt if name == "rootfs" else f"{name}.{fmt}"
        return [Artifact(label, str(dest), tree.total_bytes(), _tree_digest(dest))]
    if fmt in _FILESYSTEMS:
        art = write_file_atomic(output / f"{name}.{fmt}",
                                lambda fh: _FILESYSTEMS[fmt](tree, fh, plan, name))
        art.format = fmt if name == "rootfs" else f"{name}.{fmt}"
        return [art]
    kind, _, compression = fmt.partition(".")
    art = write_file_atomic(output / f"{name}.{fmt}",
                            lambda fh: _stream(_SERIALISERS[kind], tree, compression, fh))
    art.format = fmt if name == "rootfs" else f"{name}.{fmt}"
    return [art]
