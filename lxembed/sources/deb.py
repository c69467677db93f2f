"""Read .deb files (ar + data.tar.{xz,zst,gz}) into a RootfsTree, rootless and in memory."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Dict, Optional, Tuple

import zstandard

from ..errors import UserError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, RootfsTree, normpath


def ar_members(data: bytes, name: str) -> Iterator[Tuple[str, bytes]]:
    """Members of an ar archive (the container format of a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise UserError(f"{name}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        member = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise UserError(f"{name}: corrupt ar member header at byte {pos}") from None
        pos += 60
        yield member, data[pos:pos + size]
        pos += size + (size & 1)


def _decompress(member: str, blob: bytes, name: str) -> bytes:
    if member.endswith(".xz"):
        return lzma.decompress(blob)
    if member.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
    if member.endswith(".gz"):
        return zlib.decompress(blob, 31)
    if member.endswith(".tar"):
        return blob
    raise UserError(f"{name}: unsupported compression in {member}")


def open_data_tar(path: Path) -> tarfile.TarFile:
    """The data.tar of a .deb as a stream: members in order, never all unpacked in memory
    (a kernel package unpacks to ~400 MB)."""
    for member, blob in ar_members(Path(path).read_bytes(), str(path)):
        if not member.startswith("data.tar"):
            continue
        if member.endswith(".xz"):
            stream = lzma.LZMAFile(io.BytesIO(blob))
        elif member.endswith(".zst"):
            stream = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob))
        elif member.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=io.BytesIO(blob))
        elif member.endswith(".tar"):
            stream = io.BytesIO(blob)
        else:
            raise UserError(f"{path}: unsupported compression in {member}")
        return tarfile.open(fileobj=stream, mode="r|")
    raise UserError(f"{path}: no data.tar member")


def deb_tar(path: Path, prefix: str = "data.tar") -> bytes:
    """The uncompressed data.tar (or control.tar) of a .deb."""
    for member, blob in ar_members(Path(path).read_bytes(), str(path)):
        if member.startswith(prefix):
            return _decompress(member, blob, str(path))
    raise UserError(f"{path}: no {prefix} member")


def deb_control(path: Path) -> Dict[str, str]:
    """The fields of the package's control file."""
    with tarfile.open(fileobj=io.BytesIO(deb_tar(path, "control.tar"))) as tar:
        for member in tar:
            if member.name.lstrip("./") == "control":
                text = tar.extractfile(member).read().decode("utf-8", "replace")
                fields, key = {}, None
                for line in text.splitlines():
                    if line[:1] in (" ", "\t") and key:
                        fields[key] += "\n" + line.strip()
                    elif ":" in line:
                        key, _, value = line.partition(":")
                        fields[key] = value.strip()
                return fields
    return {}


def tar_entry(tar: tarfile.TarFile, member: tarfile.TarInfo, origin: str) -> Optional[Entry]:
    """The tree entry for one tar member (None for types a rootfs does not hold)."""
    entry = Entry(FILE, member.mode & 0o7777, member.uid, member.gid, int(member.mtime),
                  origin=origin)
    if member.isdir():
        entry.type = DIR
    elif member.issym():
        entry.type, entry.target = SYMLINK, member.linkname
    elif member.islnk():
        entry.type, entry.target = HARDLINK, normpath(member.linkname)
    elif member.isreg():
        entry.data = tar.extractfile(member).read()
    elif member.ischr() or member.isblk():
        entry.type = CHAR if member.ischr() else BLOCK
        entry.major, entry.minor = member.devmajor, member.devminor
    elif member.isfifo():
        entry.type = FIFO
    else:
        return None
    return entry


def extract_deb(path: Path, tree: RootfsTree, origin: str = "") -> int:
    """Add every entry of a .deb's data.tar to the tree; returns how many were added.

    Paths with '..', and symlinks whose relative target climbs out of the root, are refused.
    """
    origin = origin or Path(path).name
    count = 0
    with open_data_tar(path) as tar:
        for member in tar:
            try:
                dest = normpath(member.name)
            except UserError as err:
                raise UserError(f"{path}: {err}") from None
            try:
                entry = tar_entry(tar, member, origin)
            except UserError as err:
                raise UserError(f"{path}: {err}") from None
            if entry is None:
                continue
            try:
                if entry.type == DIR and dest == "/":
                    continue
                added = tree.add(dest, entry)
                if entry.type == HARDLINK:
                    entry.target = tree.resolve(entry.target)
                    if added == entry.target:
                        raise UserError(f"hard link {dest} points to itself")
            except UserError as err:
                raise UserError(f"{path}: {err}") from None
            count += 1
    return count
