"""Read a built image back into a RootfsTree: a directory, tar or cpio (newc), raw/gz/zst/xz.

Entries keep their literal paths, owners, modes and device numbers; nothing is extracted
onto the host, so an image with device nodes or setuid files reads back without root.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple, Union

from ..compression import decompress, kind_by_magic
from ..errors import UserError
from ..sources.deb import tar_entry
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, RootfsTree, normpath

CPIO_NEWC_MAGICS = (b"070701", b"070702")  # newc, and newc with checksums
_CPIO_HEADER = 110
_CPIO_TRAILER = "TRAILER!!!"

_MODE_TYPES = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFCHR: CHAR,
    stat.S_IFBLK: BLOCK,
    stat.S_IFIFO: FIFO,
}


def read_image(path: Union[str, Path]) -> Tuple[RootfsTree, str]:
    """The tree in a directory or image file, and the format found ("dir", "cpio.zst"...)."""
    path = Path(path)
    if path.is_dir():
        return read_directory(path), "dir"
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a device or FIFO would be read forever
            raise UserError(f"{path}: not a regular file or directory")
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: {err.strerror}") from None
    if not data:
        raise UserError(f"{path}: an empty file, not an image")
    compression = kind_by_magic(data)
    data = decompress(data, compression, str(path))
    suffix = f".{compression}" if compression else ""
    if data[:6] in CPIO_NEWC_MAGICS:
        return read_cpio(data, str(path)), "cpio" + suffix
    if data[257:262] == b"ustar" or _looks_like_tar(data):
        return read_tar(data, str(path)), "tar" + suffix
    if data[:4] in (b"hsqs", b"sqsh"):
        raise UserError(
            f"{path}: a squashfs image, which lxembed cannot read yet",
            hint="mount it (or unsquashfs it) and inspect the directory",
        )
    if data[1080:1082] == b"\x53\xef":
        raise UserError(
            f"{path}: an ext2/3/4 image, which lxembed cannot read yet",
            hint="mount it read-only and inspect the directory",
        )
    raise UserError(
        f"{path}: not a directory, tar or cpio (newc) image"
        + (f" (after {compression} decompression)" if compression else "")
    )


def _looks_like_tar(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return tar.next() is not None
    except (tarfile.TarError, EOFError):
        return False


def _image_path(path: str, name: str) -> str:
    try:
        return normpath(path)
    except UserError as err:
        raise UserError(f"{name}: {err}") from None


def _put(tree: RootfsTree, path: str, entry: Entry) -> None:
    """Store at the literal path (never through symlinks), creating missing parents."""
    if path == "/":
        if entry.type == DIR:
            tree.entries["/"] = entry
        return
    parent = posixpath.dirname(path)
    while parent != "/" and parent not in tree.entries:
        tree.entries[parent] = Entry(DIR, 0o755)
        parent = posixpath.dirname(parent)
    tree.entries[path] = entry


def read_tar(data: bytes, name: str) -> RootfsTree:
    tree = RootfsTree()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                path = _image_path(member.name, name)
                if member.islnk():
                    _image_path(member.linkname, name)
                entry = tar_entry(tar, member, name)
                if entry is not None:
                    _put(tree, path, entry)
            end = tar.offset  # tarfile stops quietly at a damaged header: look at what is there
    except (tarfile.TarError, EOFError) as err:
        raise UserError(f"{name}: corrupt tar archive: {err}") from None
    block = data[end:end + tarfile.BLOCKSIZE]
    if len(block) < tarfile.BLOCKSIZE:
        raise UserError(f"{name}: truncated tar archive (it ends without the end-of-archive "
                        "blocks)")
    if block.strip(b"\0"):
        raise UserError(f"{name}: corrupt tar archive (a damaged header at byte {end})")
    return tree


def read_cpio(data: bytes, name: str) -> RootfsTree:
    """Parse cpio "newc" archives (the initramfs format), concatenated ones included."""
    tree = RootfsTree()
    links: Dict[Tuple[int, int, int], List[str]] = {}  # (ino, devmajor, devminor) -> paths
    pos = trailers = 0
    while pos + _CPIO_HEADER <= len(data):
        if data[pos : pos + 6] not in CPIO_NEWC_MAGICS:
            if not data[pos : pos + 4].strip(b"\0"):
                pos += 4  # padding between concatenated archives
                continue
            raise UserError(f"{name}: bad cpio header at byte {pos} (only newc is supported)")
        try:
            fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise UserError(f"{name}: corrupt cpio header at byte {pos}") from None
        ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, _ = fields
        name_start = pos + _CPIO_HEADER
        path = data[name_start : name_start + namesize - 1].decode("utf-8", "surrogateescape")
        data_start = _align4(name_start + namesize)
        body = data[data_start : data_start + size]
        if namesize < 1 or len(body) < size:
            raise UserError(f"{name}: truncated cpio archive (entry {path!r} at byte {pos})")
        pos = _align4(data_start + size)
        if path == _CPIO_TRAILER:
            trailers += 1
            continue
        kind = _MODE_TYPES.get(stat.S_IFMT(mode))
        if kind is None:
            continue  # sockets and unknown types have no place in an image
        entry = Entry(kind, mode & 0o7777, uid, gid, mtime, origin=name)
        if kind == FILE:
            entry.data = body
        elif kind == SYMLINK:
            entry.target = body.decode("utf-8", "surrogateescape")
        elif kind in (CHAR, BLOCK):
            entry.major, entry.minor = rmaj, rmin
        path = _image_path(path, name)
        _put(tree, path, entry)
        if kind == FILE and nlink > 1:
            links.setdefault((ino, dmaj, dmin), []).append(path)
    if data[pos:].strip(b"\0") or not trailers:
        raise UserError(f"{name}: truncated cpio archive (it ends without a TRAILER!!! entry)")
    for paths in links.values():
        # newc stores a hard-linked file's data once, with the last name written.
        holder = next((p for p in paths if tree.entries[p].data), paths[0])
        for p in paths:
            if p != holder:
                tree.entries[p].type, tree.entries[p].target = HARDLINK, holder
    return tree


def _align4(n: int) -> int:
    return (n + 3) & ~3


def read_directory(root: Union[str, Path]) -> RootfsTree:
    """A host directory as an image: lstat only, symlinks never followed."""
    root = os.path.abspath(root)
    tree = RootfsTree()
    seen: Dict[Tuple[int, int], str] = {}
    st = os.lstat(root)
    tree.entries["/"] = Entry(DIR, st.st_mode & 0o7777, st.st_uid, st.st_gid, int(st.st_mtime))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # a stable walk: the first name of a hard-linked file holds its data
        for fname in sorted(dirnames + filenames):
            host = os.path.join(dirpath, fname)
            path = "/" + os.path.relpath(host, root).replace(os.sep, "/")
            try:
                st = os.lstat(host)
            except OSError:
                continue
            kind = _MODE_TYPES.get(stat.S_IFMT(st.st_mode))
            if kind is None:
                continue
            entry = Entry(
                kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, int(st.st_mtime), origin=str(root)
            )
            if kind == SYMLINK:
                entry.target = os.readlink(host)
            elif kind in (CHAR, BLOCK):
                entry.major, entry.minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            elif kind == FILE:
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    entry.type, entry.target = HARDLINK, seen[key]
                else:
                    seen[key] = path
                    try:
                        entry.data = Path(host).read_bytes()
                    except OSError as err:
                        raise UserError(f"cannot read {host}: {err.strerror}") from None
            tree.entries[path] = entry
    return tree
