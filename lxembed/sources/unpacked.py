"""The unpacked-package cache: each .deb's data.tar is decompressed once; later builds read it.

An entry is named by the .deb's SHA256 from the archive's index (the download cache has just
verified the file against it), so it can only ever describe those bytes. In the entry:

    index       its own SHA256 on the first line, then (JSON) every member in archive order
                (path, type, mode, owner, mtime, link target, device numbers, where its
                content lies in `data`), and the size and SHA256 of `data`
    data        the regular files' contents back to back
    stamp       (size, mtime, ctime, inode) of `data` when its SHA256 was last checked

The tree is filled by the same code (sources.deb.add_entries) from a .deb, while an entry is
being made, or from an entry: a build is the same byte for byte with the cache cold, warm or
off. An entry is written in a temporary directory and renamed into place whole (two builds
making the same one: the first rename wins), so a half-written entry is never read. Its files
are read-only and only ever copied from (pread) into the tree's own bytes. A damaged entry (a
bad digest, cut or changed data) is removed and made again; like the .deb cache, `data` is
hashed again only when its stamp changed. Least recently used entries (an entry's directory
mtime is its last use, to the hour) go when the cache outgrows LXEMBED_UNPACKED_CACHE_MAX
(default 2G; 0 turns the cache off).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from ..errors import UserError
from ..log import warn
from ..paths import cache_dir, file_lock
from ..tree import FILE, Entry, RootfsTree
from .apt import Deb
from .deb import add_entries, deb_entries, extract_deb

FORMAT = 2
DEFAULT_MAX = 2 << 30
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_STALE_TMP = 3600  # a temporary directory this old belongs to a build that died
_TOUCH_EVERY = 3600  # how precisely an entry's last use is kept (seconds)
_used: Set[str] = set()  # entries this process read or made: never evicted under it


def cache_root() -> Path:
    return cache_dir() / "unpacked"


def size_limit() -> int:
    """The cache's size limit in bytes, from LXEMBED_UNPACKED_CACHE_MAX (0: no cache)."""
    text = os.environ.get("LXEMBED_UNPACKED_CACHE_MAX", "")
    if not text:
        return DEFAULT_MAX
    m = _SIZE.match(text)
    if not m:
        raise UserError(f"LXEMBED_UNPACKED_CACHE_MAX: {text!r} is not a size",
                        hint="give bytes or a size such as 500M or 4G; 0 turns the unpacked "
                        "cache off")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def add_packages(debs: Sequence[Deb], tree: RootfsTree,
                 advance: Callable[[], None] = lambda: None) -> int:
    """Add fetched packages to the tree in order; returns how many entries were added.

    The packages not in the cache yet are unpacked (into the cache, and kept in memory for
    the tree) several at a time first: xz releases the GIL while it decompresses, so a cold
    build uses every core."""
    limit = size_limit()
    missing = [d for d in debs if d.sha256 and not (cache_root() / d.sha256).is_dir()]
    ready: Dict[str, list] = {}
    if limit and len(missing) > 1 and (os.cpu_count() or 1) > 1:
        _used.update(d.sha256 for d in debs)
        with ThreadPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
            for deb, entries_ in zip(missing, pool.map(_unpack_only, missing)):
                if entries_ is not None:
                    ready[deb.sha256] = entries_
    count = 0
    for deb in debs:
        unpacked_now = ready.pop(deb.sha256, None)
        if unpacked_now is not None:  # the same entries a cold add_package would give
            count += add_entries(tree, iter(unpacked_now), deb.path)
        else:
            count += add_package(deb, tree, evict=False)
        advance()
    if limit and missing:  # the cache grew
        _evict(cache_root(), limit)
    return count


def add_package(deb: Deb, tree: RootfsTree, evict: bool = True) -> int:
    """Add a fetched package's files to the tree, through the unpacked cache when it can;
    returns how many entries were added. A new entry may evict old ones (unless `evict` is
    false: the caller does it once for many)."""
    limit = size_limit()
    if not deb.sha256 or limit == 0:  # no verified key (or no cache): read the .deb itself
        return extract_deb(deb.path, tree, deb.name)
    root = cache_root()
    entry_dir = root / deb.sha256
    _used.add(deb.sha256)
    found = _load(entry_dir, deb)
    if found is not None:
        records, data = found
        return add_entries(tree, _cached_entries(records, data, deb.name), deb.path)
    count = add_entries(tree, _unpacking(deb, entry_dir), deb.path)
    if evict:
        _evict(root, limit)
    return count


def _unpack_only(deb: Deb) -> Optional[List[Tuple[str, Entry]]]:
    try:
        return list(_unpacking(deb, cache_root() / deb.sha256))
    except UserError:
        return None  # a bad .deb: add_package says so, in the order the build reads them


# -- reading an entry ------------------------------------------------------------------------
class _Blob:
    """The content file of an entry, open for reading: each piece is a copy (pread), owned
    by the tree; the cached file is never written through it. It stays open while a file
    of it is still unread (an open file outlives an eviction or a clean meanwhile)."""

    open_count = 0

    def __init__(self, fd: int, entry_dir: Path):
        self.fd, self.entry_dir = fd, entry_dir
        _Blob.open_count += 1

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:  # cut after it was checked: someone wrote into the cache
            raise UserError(f"{self.entry_dir}: the unpacked cache entry changed during the "
                            "build", hint="build again: a damaged entry is made again")
        return data

    def sha256(self) -> str:
        h, offset = hashlib.sha256(), 0
        while True:
            block = os.pread(self.fd, 1 << 20, offset)
            if not block:
                return h.hexdigest()
            h.update(block)
            offset += len(block)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            _Blob.open_count -= 1
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit: the process closes it anyway
            pass


class _CachedFile(Entry):
    """A regular file from a cache entry, its content read (a copy) when first asked for:
    the files of a package a build never reads (a picked package's other files, excluded
    ones) cost nothing. Equal to an Entry with the same fields."""

    @property
    def data(self) -> bytes:  # type: ignore[override]
        data = self.__dict__["_data"]
        if data is None:
            blob, offset, size = self.__dict__.pop("_where")
            data = self.__dict__["_data"] = blob.read(offset, size)
        return data

    @data.setter
    def data(self, value: bytes) -> None:
        self.__dict__["_data"] = value

    @property
    def size(self) -> int:  # type: ignore[override]
        if self.type == FILE and self.__dict__["_data"] is None:
            return self.__dict__["_where"][2]
        return super().size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and all(
            getattr(self, f.name) == getattr(other, f.name) for f in fields(Entry))

    __hash__ = None  # type: ignore[assignment]


_MAX_OPEN = 256  # past this many open content files, read a package's files at once


def _cached_entries(records: list, data: _Blob, origin: str) -> Iterator[Tuple[str, Entry]]:
    lazy = _Blob.open_count <= _MAX_OPEN
    for dest, kind, mode, uid, gid, mtime, target, major, minor, offset, size in records:
        if kind == FILE and size and lazy:
            entry: Entry = _CachedFile(kind, mode, uid, gid, mtime, None, target, major, minor,
                                       origin)
            entry.__dict__["_where"] = (data, offset, size)
        else:
            content = data.read(offset, size) if kind == FILE and size else b""
            entry = Entry(kind, mode, uid, gid, mtime, content, target, major, minor, origin)
        yield dest, entry


def _load(entry_dir: Path, deb: Deb) -> Optional[Tuple[list, _Blob]]:
    """The entry's members and content, None if there is none (a damaged one is removed)."""
    try:
        digest, _, raw = _read(entry_dir / "index").partition(b"\n")
        fd = os.open(entry_dir / "data", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if entry_dir.exists():  # a directory without its files: not made by this code whole
            _damaged(entry_dir, deb)
        return None  # absent (or evicted by another build meanwhile)
    except OSError:
        _damaged(entry_dir, deb)
        return None
    data = _Blob(fd, entry_dir)
    try:
        index = json.loads(raw) if hashlib.sha256(raw).hexdigest().encode() == digest else None
        st = os.fstat(fd)
        good = (isinstance(index, dict) and index.get("format") == FORMAT
                and st.st_size == index.get("data_size"))
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if good and _read_stamp(entry_dir) != stamp:  # changed since checked, or a copy
            good = data.sha256() == index.get("data_sha256")
            if good:
                _write_json(entry_dir / "stamp", stamp)
    except (ValueError, OSError):
        good = False
    if not good:
        data.close()
        _damaged(entry_dir, deb)
        return None
    try:
        # The directory's mtime is its last use, for the eviction; to the hour is enough, and
        # a warm build then writes nothing (metadata writes are slow on a busy disk).
        if time.time() - os.stat(entry_dir).st_mtime > _TOUCH_EVERY:
            os.utime(entry_dir)
    except OSError:
        pass
    return index["members"], data


def _read(path: Path) -> bytes:
    """A small file's bytes, in fewer system calls than open() (no fstat, no isatty)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _read_stamp(entry_dir: Path) -> Optional[list]:
    try:
        return json.loads(_read(entry_dir / "stamp"))
    except (OSError, ValueError):
        return None


def _damaged(entry_dir: Path, deb: Deb) -> None:
    warn(f"{deb.path.name}: its unpacked cache entry was damaged: unpacked again")
    _discard(entry_dir)


# -- making an entry -------------------------------------------------------------------------
def _unpacking(deb: Deb, entry_dir: Path) -> Iterator[Tuple[str, Entry]]:
    """The .deb's entries, recorded into a new cache entry as they pass; the entry is put in
    place only once the whole data.tar was read and its check passed. Failing to write it (a
    full disk, a read-only cache) costs speed, never the build: the entries still all pass."""
    tmp = entry_dir.parent / f".tmp-{entry_dir.name}-{os.getpid()}-{time.monotonic_ns()}"
    out = None
    try:
        entry_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        out = open(tmp / "data", "wb")
    except OSError as err:
        _not_kept(deb, err)
    records: List[list] = []
    h, offset = hashlib.sha256(), 0
    try:
        for dest, entry in deb_entries(deb.path, deb.name):
            size = len(entry.data) if entry.type == FILE else 0
            if out is not None and size:
                try:
                    out.write(entry.data)
                except OSError as err:
                    out = _not_kept(deb, err, out)
                h.update(entry.data)
            records.append([dest, entry.type, entry.mode, entry.uid, entry.gid, entry.mtime,
                            entry.target, entry.major, entry.minor, offset, size])
            offset += size
            yield dest, entry
        if out is not None:
            try:
                out.close()
                _commit(tmp, entry_dir, deb, records, offset, h.hexdigest())
            except OSError as err:
                _not_kept(deb, err)
    finally:
        if out is not None and not out.closed:
            try:
                out.close()
            except OSError:
                pass  # the entry is not kept anyway
        shutil.rmtree(tmp, ignore_errors=True)


def _not_kept(deb: Deb, err: OSError, out=None) -> None:
    warn(f"{deb.path.name}: not kept in the unpacked cache ({err.strerror or err})")
    if out is not None:
        try:
            out.close()
        except OSError:
            pass  # the rest of the buffer could not be written either: the entry is dropped


def _commit(tmp: Path, entry_dir: Path, deb: Deb, records: List[list], size: int,
            sha256: str) -> None:
    raw = json.dumps({"format": FORMAT, "package": deb.path.name, "data_size": size,
                      "data_sha256": sha256, "members": records},
                     separators=(",", ":")).encode()
    # Few files: creating one costs more than writing megabytes on some file systems.
    (tmp / "index").write_bytes(hashlib.sha256(raw).hexdigest().encode() + b"\n" + raw)
    for name in ("data", "index"):
        os.chmod(tmp / name, 0o444)  # only ever read
    st = os.stat(tmp / "data")
    (tmp / "stamp").write_text(json.dumps([st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                           st.st_ino]))
    try:
        os.rename(tmp, entry_dir)
    except OSError:
        if not entry_dir.is_dir():
            raise
        # Another build put the same entry in place first: theirs is as good.


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    except OSError:
        pass  # the stamp saves hashing next time; the entry is good without it


def _discard(path: Path) -> None:
    """Take an entry out of use at once (a rename), then delete it."""
    trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, trash)
    except OSError:
        return  # gone already (another build discarded or evicted it)
    shutil.rmtree(trash, ignore_errors=True)


# -- size, eviction, cleaning ----------------------------------------------------------------
def entries(root: Optional[Path] = None) -> List[Tuple[float, int, Path]]:
    """(last use, bytes, directory) of every entry in the cache."""
    root = root or cache_root()
    found = []
    try:
        dirs = [d for d in root.iterdir() if not d.name.startswith(".")]
    except FileNotFoundError:
        return []
    for d in dirs:
        try:
            size = sum(f.stat().st_size for f in d.iterdir())
            found.append((d.stat().st_mtime, size, d))
        except OSError:
            continue  # evicted meanwhile
    return found


def _evict(root: Path, limit: int) -> None:
    """Remove the least recently used entries until the cache fits its limit (entries this
    process uses stay, even if they alone are over it), and what dead builds left."""
    with file_lock(root / ".lock"):
        now = time.time()
        for d in root.glob(".t*-*"):
            try:
                if d.name.startswith(".trash-") or now - d.stat().st_mtime > _STALE_TMP:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass
        found = entries(root)
        total = sum(size for _, size, _ in found)
        for _, size, d in sorted(found):
            if total <= limit:
                break
            if d.name not in _used:
                _discard(d)
                total -= size


def usage() -> Dict[str, object]:
    """What the cache holds: where, how many entries, how many bytes, its limit."""
    found = entries()
    return {"path": str(cache_root()), "entries": len(found),
            "bytes": sum(size for _, size, _ in found), "limit": size_limit()}


def clean() -> Tuple[int, int]:
    """Remove every entry (and leftovers of dead builds); returns (entries, bytes) removed."""
    root = cache_root()
    found = entries(root)
    for _, _, d in found:
        _discard(d)
    if root.is_dir():
        with file_lock(root / ".lock"):
            for d in root.glob(".t*-*"):
                shutil.rmtree(d, ignore_errors=True)
    return len(found), sum(size for _, size, _ in found)
