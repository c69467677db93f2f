"""Read a built output back: its manifest, its images, and file contents from an archive.

`lxembed size` and `lxembed diff` work on what a build left (OUTPUT/manifest.json and the
images beside it), not on a tree in memory: the images may come from another machine.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import zstandard

from ..errors import UserError

# Which image `lxembed size OUTDIR` accounts for when none is named: flash formats first.
PREFERRED = ("squashfs", "ubi", "jffs2", "ext4", "cpio.zst", "cpio.xz", "cpio.gz", "tar.zst",
             "tar.xz", "tar.gz", "cpio", "tar", "sdcard", "disk.ext4", "disk.squashfs")


def locate(path: Path, fmt: Optional[str] = None) -> Tuple[Path, Optional[Path], str]:
    """(output dir, image file or None, format) for an output dir or an image in one."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".json"):
        return path.parent, None, "manifest"
    if path.is_file():
        name = path.name
        if not name.startswith("rootfs."):
            raise UserError(f"{path}: not an image lxembed wrote (rootfs.FORMAT)")
        return path.parent, path, name[len("rootfs."):]
    if not (path / "manifest.json").exists():
        raise UserError(f"{path}: no manifest.json here", hint="give a build's output directory")
    if fmt:
        image = path / f"rootfs.{fmt}"
        if not image.exists():
            raise UserError(f"{path}: no rootfs.{fmt}", hint=f"build it with --format {fmt}")
        return path, image, fmt
    for candidate in PREFERRED:
        if (path / f"rootfs.{candidate}").exists():
            return path, path / f"rootfs.{candidate}", candidate
    return path, None, "dir" if (path / "rootfs").is_dir() else "manifest"


def load_manifest(outdir: Path) -> dict:
    path = outdir / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the manifest ({err})") from None


def _decompressed(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    return raw


def _cpio_files(data: bytes) -> Dict[str, bytes]:
    files, off = {}, 0
    while off + 110 <= len(data) and data[off:off + 6] == b"070701":
        mode = int(data[off + 14:off + 22], 16)
        size = int(data[off + 54:off + 62], 16)
        namesize = int(data[off + 94:off + 102], 16)
        name = data[off + 110:off + 110 + namesize - 1].decode("utf-8", "replace")
        off += 110 + namesize
        off += -off % 4
        if name == "TRAILER!!!":
            break
        if mode & 0o170000 == 0o100000:
            files["/" + name.lstrip("./")] = data[off:off + size]
        off += size
        off += -off % 4
    return files


def _tar_files(data: bytes) -> Dict[str, bytes]:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isreg():
                files["/" + member.name.lstrip("./")] = tar.extractfile(member).read()
    return files


def _read_dir(root: Path) -> Dict[str, bytes]:
    return {"/" + str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _unpacked(image: Path, argv) -> Optional[Dict[str, bytes]]:
    """Contents of a filesystem image, unpacked by its own tool into a temporary directory
    (unsquashfs, debugfs rdump: no mount, no root; device nodes it cannot make are skipped)."""
    if shutil.which(argv[0]) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="lxembed-size-") as tmp:
        subprocess.run([part.format(image=image, dest=tmp) for part in argv],
                       capture_output=True)
        files = _read_dir(Path(tmp, "root") if Path(tmp, "root").is_dir() else Path(tmp))
    return files or None


_UNPACKERS = {
    "squashfs": ["unsquashfs", "-n", "-q", "-no-xattrs", "-d", "{dest}/root", "{image}"],
    "ext4": ["debugfs", "-R", "rdump / {dest}", "{image}"],
}


def file_contents(outdir: Path) -> Optional[Dict[str, bytes]]:
    """path -> content of every regular file, from the rootfs/ directory, an archive or a
    squashfs or ext4 image in the output; None if there is none of them (then only apparent
    sizes are known)."""
    root = outdir / "rootfs"
    if root.is_dir():
        return _read_dir(root)
    for kind in ("cpio", "tar"):
        for suffix in ("", ".zst", ".xz", ".gz"):
            path = outdir / f"rootfs.{kind}{suffix}"
            if path.exists():
                data = _decompressed(path)
                return _cpio_files(data) if kind == "cpio" else _tar_files(data)
    for fmt, argv in _UNPACKERS.items():
        image = outdir / f"rootfs.{fmt}"
        if image.exists():
            return _unpacked(image, argv)
    return None
