"""Read .deb files (ar + data.tar.{xz,zst,gz}) into a RootfsTree, rootless and in memory."""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Tuple

from ..compression import drain, kind_by_name, open_decompressed
from ..errors import UserError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, RootfsTree, normpath


def ar_members(data: bytes, name: str) -> Iterator[Tuple[str, bytes]]:
    """Members of an ar archive (the container format of a .deb); a cut one is refused."""
    if not data.startswith(b"!<arch>\n"):
        what = "an empty file" if not data else "no ar header"
        raise UserError(f"{name}: not a Debian package ({what})")
    pos = 8
    while pos < len(data):
        header = data[pos:pos + 60]
        if len(header) < 60:
            raise UserError(f"{name}: truncated .deb (ends inside a member header at byte {pos})")
        member = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise UserError(f"{name}: corrupt .deb (bad ar member header at byte {pos})") from None
        if header[58:60] != b"`\n" or size < 0:
            raise UserError(f"{name}: corrupt .deb (bad ar member header at byte {pos})")
        pos += 60
        blob = data[pos:pos + size]
        if len(blob) < size:
            raise UserError(f"{name}: truncated .deb ({member} has {len(blob)} of its {size} "
                            "bytes)")
        yield member, blob
        pos += size + (size & 1)


def _compression(member: str, name: str) -> str:
    """The compression of a member from its name (data.tar.xz); .deb members always say it."""
    kind = kind_by_name(member)
    if not kind and not member.endswith(".tar"):
        raise UserError(f"{name}: unsupported compression in {member}")
    return kind


def _read_deb(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read the .deb: {err.strerror}") from None


@contextlib.contextmanager
def open_data_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """The data.tar of a .deb as a stream: members in order, never all unpacked in memory
    (a kernel package unpacks to ~400 MB). Leaving the block reads the rest, so the
    compressed stream's check is verified; a corrupt member is a UserError naming the .deb."""
    for member, blob in ar_members(_read_deb(path), str(path)):
        if not member.startswith("data.tar"):
            continue
        stream = open_decompressed(blob, _compression(member, str(path)), f"{path} ({member})")
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar
            drain(stream)
        except (tarfile.TarError, EOFError) as err:
            raise UserError(f"{path}: corrupt .deb ({member}: {err})") from None
        return
    raise UserError(f"{path}: not a Debian package (no data.tar member)")


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


def deb_entries(path: Path, origin: str) -> Iterator[Tuple[str, Entry]]:
    """(path in the image, entry) for each member of a .deb's data.tar, in archive order.

    Paths with '..' are refused, naming the .deb; the stream's check is verified when the
    iteration ends (see open_data_tar).
    """
    with open_data_tar(path) as tar:
        for member in tar:
            try:
                dest = normpath(member.name)
                if member.islnk():
                    normpath(member.linkname)
            except UserError as err:
                raise UserError(f"{path}: {err}") from None
            entry = tar_entry(tar, member, origin)  # a read error names the .deb already
            if entry is not None:
                yield dest, entry


def add_entries(tree: RootfsTree, entries: Iterator[Tuple[str, Entry]], path: Path) -> int:
    """Add (path, entry) pairs of one package to the tree; returns how many were added.

    Symlinks whose relative target climbs out of the root are refused, naming the .deb.
    """
    count = 0
    try:
        for dest, entry in entries:
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
    finally:
        close = getattr(entries, "close", None)
        if close is not None:  # leave the .deb's stream now, not when collected
            close()
    return count


def extract_deb(path: Path, tree: RootfsTree, origin: str = "") -> int:
    """Add every entry of a .deb's data.tar to the tree; returns how many were added.

    Paths with '..', and symlinks whose relative target climbs out of the root, are refused.
    """
    origin = origin or Path(path).name
    return add_entries(tree, deb_entries(path, origin), path)
