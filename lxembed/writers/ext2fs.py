"""Fill a filesystem made by mke2fs with the tree, in process, through e2fsprogs' libext2fs.

`mke2fs -d` reads a staging directory, and a rootless build cannot give that directory root
owners or device nodes: every inode then needed a debugfs fix-up, and writing and re-reading
20,000 staged files cost more than mke2fs itself. Here the calls that `mke2fs -d` makes
(misc/create_inode.c: new_inode, link, mkdir, symlink, file_write) are made on the tree's own
entries, and each inode is written once, whole, with the tree's mode, owner and times. The
library is the one mke2fs, debugfs and e2fsck use (libext2fs.so.2, a stable ABI).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import struct
from typing import Dict

from ..errors import UserError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, RootfsTree

_FLAG_RW, _FLAG_64BITS = 0x01, 0x20000  # 64BITS: the 64bit feature needs 64-bit bitmaps
_FILE_WRITE = 0x0001
_FT = {FILE: 1, DIR: 2, CHAR: 3, BLOCK: 4, FIFO: 5, SYMLINK: 7}  # EXT2_FT_*
_EXTENTS_FL = 0x00080000
_ROOT_INO = 2
_DIR_NO_SPACE = "No free space in the directory"  # EXT2_ET_DIR_NO_SPACE's message
_EXTRA_ISIZE = 32  # sizeof(struct ext2_inode_large) - 128 in 1.47, what mke2fs writes

# struct ext2_inode_large (256 bytes, the inode size mke2fs is given). libext2fs hands inodes
# over in host byte order, hence "=". Fields: mode, uid, size, atime, ctime, mtime, dtime, gid,
# links, blocks, flags, osd1, i_block[15], generation, file_acl, size_high, faddr, blocks_hi,
# file_acl_high, uid_high, gid_high, checksum_lo, reserved, extra_isize, checksum_hi,
# ctime_extra, mtime_extra, atime_extra, crtime, crtime_extra; the rest zero.
_INODE = struct.Struct("=HHIIIIIHHIII60sIIIIHHHHHHHHIIIII104x")
_HEAD = struct.Struct("=HHI")  # mode, uid, size: what set_attributes reads back
# An empty extent tree in i_block: on-disk (little-endian) in every byte order.
_EXTENT_HEADER = struct.pack("<HHHHI", 0xF30A, 0, 4, 0, 0)


class Ext2Error(Exception):
    """A libext2fs call failed; str() is e2fsprogs' own message."""


_P, _U32, _INT, _STR = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p
_OUT, _OUT_U32 = ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_uint32)
# The prototypes of lib/ext2fs/ext2fs.h (1.47) that are used here: name -> argument types.
# Declared, so that ctypes converts in C and refuses a wrong argument instead of guessing.
_PROTOTYPES = {
    "ext2fs_open": (_STR, _INT, _INT, ctypes.c_uint, _P, _OUT),
    "ext2fs_read_bitmaps": (_P,),
    "ext2fs_new_inode": (_P, _U32, _INT, _P, _OUT_U32),
    "ext2fs_link": (_P, _U32, _STR, _U32, _INT),
    "ext2fs_expand_dir": (_P, _U32),
    "ext2fs_mkdir": (_P, _U32, _U32, _STR),
    "ext2fs_symlink": (_P, _U32, _U32, _STR, _STR),
    "ext2fs_lookup": (_P, _U32, _STR, _INT, _STR, _OUT_U32),
    "ext2fs_read_inode_full": (_P, _U32, _STR, _INT),
    "ext2fs_write_inode_full": (_P, _U32, _STR, _INT),
    "ext2fs_file_open": (_P, _U32, _INT, _OUT),
    "ext2fs_file_write": (_P, _STR, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint)),
    "ext2fs_file_close": (_P,),
    "ext2fs_close_free": (_OUT,),
}
_LIB = None


def _lib():
    global _LIB
    if _LIB is None:
        name = ctypes.util.find_library("ext2fs") or "libext2fs.so.2"
        try:
            lib = ctypes.CDLL(name)
            com_err = ctypes.CDLL(ctypes.util.find_library("com_err") or "libcom_err.so.2")
        except OSError:
            raise UserError("ext4: libext2fs (e2fsprogs' library) is not installed",
                            hint="apt-get install e2fsprogs") from None
        lib.initialize_ext2_error_table()  # so that error codes read as e2fsprogs' messages
        com_err.error_message.restype = ctypes.c_char_p
        com_err.error_message.argtypes = [ctypes.c_long]
        lib.error_message = com_err.error_message
        for fn, argtypes in _PROTOTYPES.items():
            getattr(lib, fn).argtypes = argtypes
            getattr(lib, fn).restype = ctypes.c_long  # errcode_t
        for fn, argtypes in (("ext2fs_inode_alloc_stats2", (_P, _U32, _INT, _INT)),
                             ("ext2fs_free", (_P,))):
            getattr(lib, fn).argtypes = argtypes
            getattr(lib, fn).restype = None
        _LIB = lib
    return _LIB


def _split_time(t: int):
    """(32-bit seconds, *_extra) as ext4 stores a time: two epoch bits carry it past 2038."""
    if 0 <= t < 0x80000000:
        return t, 0
    low = t & 0xFFFFFFFF
    signed = low - (1 << 32) if low & 0x80000000 else low
    return low, ((t - signed) >> 32) & 3


class Ext2Fs:
    """An ext2/3/4 image opened read-write; close() writes bitmaps and superblock out."""

    def __init__(self, image: str, fake_time: int):
        self.lib = _lib()
        self.fs = ctypes.c_void_p()
        manager = ctypes.c_void_p.in_dll(self.lib, "unix_io_manager")
        # ext2fs_open reads the clock for what it stamps (write time) from the environment.
        saved = os.environ.get("E2FSPROGS_FAKE_TIME")
        os.environ["E2FSPROGS_FAKE_TIME"] = str(fake_time)
        try:
            self._check(self.lib.ext2fs_open(os.fsencode(image), _FLAG_RW | _FLAG_64BITS, 0, 0,
                                             manager, ctypes.byref(self.fs)), image)
        finally:
            if saved is None:
                del os.environ["E2FSPROGS_FAKE_TIME"]
            else:
                os.environ["E2FSPROGS_FAKE_TIME"] = saved
        err = self.lib.ext2fs_read_bitmaps(self.fs)
        if err:
            self.close(flush=False)
            self._check(err, image)
        self.inode = ctypes.create_string_buffer(256)
        # Out-arguments made once: the hot path then allocates no ctypes objects.
        self._ino, self._file, self._written = _U32(), ctypes.c_void_p(), ctypes.c_uint()
        self._ino_ref, self._file_ref, self._written_ref = (
            ctypes.byref(self._ino), ctypes.byref(self._file), ctypes.byref(self._written))

    def _check(self, err: int, what) -> None:
        if err:
            message = self.lib.error_message(err).decode(errors="replace")
            raise Ext2Error(f"{what}: {message}")

    def close(self, flush: bool = True) -> None:
        """Write bitmaps, group descriptors and superblock out; or only let go (on an error:
        the image is thrown away)."""
        if flush:
            self._check(self.lib.ext2fs_close_free(ctypes.byref(self.fs)), "closing the image")
        else:
            self.lib.ext2fs_free(self.fs)

    def lookup(self, parent: int, name: bytes, what: str) -> int:
        ino = _U32()
        self._check(self.lib.ext2fs_lookup(self.fs, parent, name, len(name), None,
                                           ctypes.byref(ino)), what)
        return ino.value

    def new_inode(self, parent: int, st_mode: int) -> int:
        self._check(self.lib.ext2fs_new_inode(self.fs, parent, st_mode, None, self._ino_ref),
                    "allocating an inode")
        return self._ino.value

    def link(self, parent: int, name: bytes, ino: int, kind: str, what: str) -> None:
        err = self.lib.ext2fs_link(self.fs, parent, name, ino, _FT[kind])
        if err and self._no_space(err):  # as create_inode.c: grow the directory, once
            self._check(self.lib.ext2fs_expand_dir(self.fs, parent), what)
            err = self.lib.ext2fs_link(self.fs, parent, name, ino, _FT[kind])
        self._check(err, what)

    def _no_space(self, err: int) -> bool:
        return self.lib.error_message(err).decode(errors="replace") == _DIR_NO_SPACE

    def mkdir(self, parent: int, name: bytes, what: str) -> int:
        ino = self.new_inode(parent, 0o40755)
        err = self.lib.ext2fs_mkdir(self.fs, parent, ino, name)
        if err and self._no_space(err):  # ext2fs_mkdir undid its allocations: again, once
            self._check(self.lib.ext2fs_expand_dir(self.fs, parent), what)
            err = self.lib.ext2fs_mkdir(self.fs, parent, ino, name)
        self._check(err, what)
        return ino

    def symlink(self, parent: int, name: bytes, target: bytes, what: str) -> int:
        ino = self.new_inode(parent, 0o120777)
        # No name: linked below, where a full directory is expanded (ext2fs_symlink would
        # leave that to its caller after undoing its allocations).
        self._check(self.lib.ext2fs_symlink(self.fs, parent, ino, None, target),
                    what)
        self.link(parent, name, ino, SYMLINK, what)
        return ino

    def read_inode(self, ino: int) -> None:
        self._check(self.lib.ext2fs_read_inode_full(self.fs, ino, self.inode, 256),
                    f"inode {ino}")

    def write_inode(self, ino: int) -> None:
        self._check(self.lib.ext2fs_write_inode_full(self.fs, ino, self.inode, 256),
                    f"inode {ino}")

    def _fill(self, ino: int, e: Entry, st_mode: int, size: int, links: int, blocks: int,
              flags: int, i_block: bytes) -> None:
        """Write inode `ino` whole: every time is the tree's mtime (crtime too), no nanoseconds,
        owners with their high 16 bits, the extra fields as long as mke2fs makes them (32)."""
        t, x = _split_time(e.mtime)
        _INODE.pack_into(self.inode, 0, st_mode, e.uid & 0xFFFF, size & 0xFFFFFFFF, t, t, t, 0,
                         e.gid & 0xFFFF, links, blocks, flags, 0, i_block, 0, 0, size >> 32,
                         0, 0, 0, e.uid >> 16, e.gid >> 16, 0, 0, _EXTRA_ISIZE, 0, x, x, x, t, x)
        self.write_inode(ino)

    def set_attributes(self, ino: int, e: Entry) -> None:
        """The tree's mode, owner and times on an inode the library made (a directory, a
        symlink): its size, blocks, links, flags and i_block kept."""
        self.read_inode(ino)
        mode, _, size = _HEAD.unpack_from(self.inode)
        links, blocks, flags = struct.unpack_from("=HII", self.inode, 26)
        i_block = self.inode.raw[40:100]
        size |= struct.unpack_from("=I", self.inode, 108)[0] << 32
        self._fill(ino, e, (mode & 0o170000) | (e.mode & 0o7777), size, links, blocks, flags,
                   i_block)

    def new_file(self, parent: int, name: bytes, e: Entry, what: str) -> int:
        """A regular file, as do_write_internal makes it: an empty extent tree, then its data.
        The hot path of a big tree: each call here costs once per file."""
        lib, fs, ino_ref = self.lib, self.fs, self._ino_ref
        err = lib.ext2fs_new_inode(fs, parent, 0o100644, None, ino_ref)
        if err:
            self._check(err, what)
        ino = self._ino.value
        self.link(parent, name, ino, FILE, what)
        lib.ext2fs_inode_alloc_stats2(fs, ino, 1, 0)
        data = e.data
        self._fill(ino, e, 0o100000 | (e.mode & 0o7777), len(data), 1, 0, _EXTENTS_FL,
                   _EXTENT_HEADER)
        if data:
            self._check(lib.ext2fs_file_open(fs, ino, _FILE_WRITE, self._file_ref), what)
            err = lib.ext2fs_file_write(self._file, data, len(data), self._written_ref)
            # The close allocates and writes the last block: always made, first error wins.
            err = lib.ext2fs_file_close(self._file) or err
            self._check(err, what)
        return ino

    def new_node(self, parent: int, name: bytes, e: Entry, what: str) -> int:
        """A device node or FIFO, as do_mknod_internal makes them."""
        ino = self.new_inode(parent, 0o10755)
        self.link(parent, name, ino, e.type, what)
        self._alloc_stats(ino)
        kind = {CHAR: 0o20000, BLOCK: 0o60000, FIFO: 0o10000}[e.type]
        device = b""
        if e.type != FIFO:
            if e.major < 256 and e.minor < 256:
                words = (e.major * 256 + e.minor, 0)
            else:  # the "new" encoding, as the kernel's new_encode_dev()
                words = (0, (e.minor & 0xFF) | (e.major << 8) | ((e.minor & ~0xFF) << 12))
            device = struct.pack("=II", *words)
        self._fill(ino, e, kind | (e.mode & 0o7777), 0, 1, 0, 0, device)
        return ino

    def _alloc_stats(self, ino: int) -> None:
        self.lib.ext2fs_inode_alloc_stats2(self.fs, ino, 1, 0)

    def add_link(self, parent: int, name: bytes, ino: int, kind: str, what: str) -> None:
        """A hard link: one more name, one more link count."""
        self.link(parent, name, ino, kind, what)
        self.read_inode(ino)
        links = struct.unpack_from("=H", self.inode, 26)[0]
        struct.pack_into("=H", self.inode, 26, links + 1)
        self.write_inode(ino)


def populate(image: str, tree: RootfsTree, fake_time: int) -> None:
    """Every entry of `tree` into the empty filesystem `image`, in the tree's (sorted) order.

    Raises Ext2Error with e2fsprogs' message ("Could not allocate block ...") when it fails.
    """
    # Cyclic collections would walk the tree's entries again and again while nothing here
    # makes a cycle: off for the fill.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _populate(Ext2Fs(image, fake_time), tree)
    finally:
        if collecting:
            gc.enable()


def _populate(fs: Ext2Fs, tree: RootfsTree) -> None:
    inodes: Dict[str, int] = {"/": _ROOT_INO}
    kinds: Dict[str, str] = {"/": DIR}
    links = []
    try:
        for path, e in tree:
            if path == "/":
                fs.set_attributes(_ROOT_INO, e)
                continue
            parent_path, _, base = path.rpartition("/")
            parent = inodes[parent_path or "/"]
            name = os.fsencode(base)
            if len(name) > 255:  # libext2fs would write a dirent with the length cut to 8 bits
                raise UserError(f"ext4: {path}: a name longer than 255 bytes")
            if e.type == HARDLINK:
                links.append((parent, name, path, e))  # its target may sort after it
                continue
            if path == "/lost+found" and e.type != DIR:
                raise UserError("ext4: /lost+found is a directory on ext4 (e2fsck's); the tree "
                                f"has a {e.type} there")
            if e.type == DIR:
                if path == "/lost+found":  # mke2fs made it, with its preallocated blocks
                    ino = fs.lookup(_ROOT_INO, name, path)
                else:
                    ino = fs.mkdir(parent, name, path)
                fs.set_attributes(ino, e)
            elif e.type == FILE:
                ino = fs.new_file(parent, name, e, path)
            elif e.type == SYMLINK:
                ino = fs.symlink(parent, name, os.fsencode(e.target), path)
                fs.set_attributes(ino, e)
            else:
                ino = fs.new_node(parent, name, e, path)
            inodes[path], kinds[path] = ino, e.type
        for parent, name, path, e in links:
            target, seen = e.target, {path}
            while target not in inodes and target not in seen and tree.get(target) is not None \
                    and tree.get(target).type == HARDLINK:  # a link to a link: to its inode
                seen.add(target)
                target = tree.get(target).target
            if target not in inodes or kinds[target] == DIR:
                raise UserError(f"ext4: hard link {path} -> {e.target}: no such file")
            fs.add_link(parent, name, inodes[target], kinds[target], path)
    except BaseException:
        fs.close(flush=False)
        raise
    fs.close()
