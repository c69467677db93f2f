"""Reading compressed data: gz, xz and zst, told apart by magic or by name, in one place.

Every reader checks what the format can check: a stream that ends early is an error (not a
shorter result), and the stream's own check (gzip CRC32, xz CRC64, zstd checksum) is verified
when it is read to its end. Errors are UserErrors naming the file. Concatenated streams (gzip
members, xz streams, zstd frames) are read as one, as gzip, xz and zstd do.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import zlib
from typing import BinaryIO, Callable, Optional, Union

import zstandard

from .errors import UserError
from .paths import cache_dir

# Magic numbers, first bytes of a stream.
MAGICS = ((b"\x1f\x8b", "gz"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zst"))
SUFFIXES = {".gz": "gz", ".xz": "xz", ".zst": "zst"}
KINDS = ("gz", "xz", "zst")
_CHUNK = 1 << 16
_ERRORS = (zlib.error, lzma.LZMAError, zstandard.ZstdError, EOFError)


def kind_by_magic(data: bytes) -> str:
    """The compression of `data` from its first bytes, "" if none lxembed reads."""
    return next((kind for magic, kind in MAGICS if data.startswith(magic)), "")


def kind_by_name(name: str) -> str:
    """The compression a file name says (its last suffix), "" for none."""
    return next((kind for suffix, kind in SUFFIXES.items() if name.endswith(suffix)), "")


def _decompressor(kind: str):
    if kind == "gz":
        return zlib.decompressobj(31)  # 31: gzip header and trailer
    if kind == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if kind == "zst":
        return zstandard.ZstdDecompressor().decompressobj()
    if kind == "lzma":  # legacy .lzma, only inside kernel images
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    raise ValueError(f"unknown compression {kind!r}")


class DecompressingReader(io.RawIOBase):
    """A read-only stream of the uncompressed bytes of `source` (a file object or bytes)."""

    def __init__(self, source: Union[bytes, BinaryIO], kind: str, name: str):
        super().__init__()
        self._source = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        self.kind, self.name = kind, name
        self._decoder = _decompressor(kind)
        self._started = False  # has the current stream seen any input?
        self._pending = memoryview(b"")  # decoded, not yet read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            piece = self.next_piece()
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def next_piece(self) -> Optional[bytes]:
        """The next decoded bytes (maybe empty), None at the verified end."""
        if self._decoder.eof:  # one stream ended: another may follow (gzip members, frames)
            # Zero bytes between streams are xz's stream padding (no stream starts with one).
            rest = (self._decoder.unused_data + self._source.read(_CHUNK)).lstrip(b"\0")
            if not rest:
                self._trailing_zeros()
                return None
            self._decoder, self._started = _decompressor(self.kind), False
            return self._decode(rest)
        chunk = self._source.read(_CHUNK)
        if not chunk:
            what = "ends early (truncated)" if self._started else "is empty"
            raise UserError(f"{self.name}: the {self.kind} compressed data {what}")
        return self._decode(chunk)

    def _trailing_zeros(self) -> None:
        while True:
            chunk = self._source.read(_CHUNK)
            if not chunk:
                return
            if chunk.strip(b"\0"):
                raise UserError(f"{self.name}: garbage after the {self.kind} compressed data")

    def _decode(self, chunk: bytes) -> bytes:
        self._started = True
        try:
            return self._decoder.decompress(chunk)
        except _ERRORS as err:
            raise UserError(f"{self.name}: corrupt {self.kind} compressed data ({err})") from None


def open_decompressed(source: Union[bytes, BinaryIO], kind: str, name: str) -> BinaryIO:
    """The uncompressed bytes of `source` as a stream ("" kind: the bytes themselves).

    Read it to its end to have the stream's check verified (tarfile stops at the archive's
    end marker: `drain()` the rest).
    """
    if not kind:
        return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    return io.BufferedReader(DecompressingReader(source, kind, name), _CHUNK)


def drain(stream: BinaryIO) -> None:
    """Read a stream to its end: verifies the trailing checks of compressed data."""
    while stream.read(_CHUNK):
        pass


def decompress(data: bytes, kind: str, name: str) -> bytes:
    """The whole uncompressed content, verified ("" kind: `data` itself)."""
    if not kind:
        return data
    reader, pieces = DecompressingReader(data, kind, name), []
    while True:
        piece = reader.next_piece()
        if piece is None:
            return b"".join(pieces)
        pieces.append(piece)


def decompress_embedded(blob: bytes, kind: str) -> Optional[bytes]:
    """What decodes from the start of `blob`, trailing bytes ignored; None if nothing valid
    starts there (a search for a payload inside another file, such as a kernel image)."""
    try:
        return _decompressor(kind).decompress(blob)
    except _ERRORS:
        return None


def compressed_memo(raw: bytes, method: str, suffix: str,
                    compress: Callable[[bytes], bytes]) -> bytes:
    """`compress(raw)`, remembered in the cache by the hash of the input and `method` (the
    compressor and its level): only for a compressor whose output depends on nothing else."""
    key = hashlib.sha256(raw + method.encode()).hexdigest()
    memo = cache_dir() / method.rstrip("0123456789") / key[:2] / f"{key}.{suffix}"
    try:
        return memo.read_bytes()
    except FileNotFoundError:
        pass
    data = compress(raw)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, memo)
    return data
