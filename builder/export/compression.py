"""Layer compression: one place that knows gzip, zstd and plain tar."""

from __future__ import annotations

import collections
import enum
import os
import struct
import threading
import zlib
from typing import TYPE_CHECKING, BinaryIO

from builder import image as media
from builder.errors import PybuildError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor


class Compression(enum.Enum):
    GZIP = "gzip"
    ZSTD = "zstd"
    UNCOMPRESSED = "uncompressed"

    def media_type(self, oci: bool = True) -> str:
        if self is Compression.GZIP:
            return media.OCI_LAYER_GZIP if oci else media.DOCKER_LAYER_GZIP
        if self is Compression.ZSTD:
            return media.OCI_LAYER_ZSTD
        return media.OCI_LAYER if oci else media.DOCKER_LAYER

    @classmethod
    def of_media_type(cls, media_type: str) -> "Compression":
        if media_type.endswith("gzip"):
            return cls.GZIP
        if media_type.endswith("zstd"):
            return cls.ZSTD
        return cls.UNCOMPRESSED


class _CompressingWriter:
    """Feeds a zlib- or zstandard-style compressobj and writes what it emits."""

    def __init__(self, out: BinaryIO, compressor):
        self._out = out
        self._z = compressor

    def write(self, data) -> int:
        chunk = self._z.compress(data)
        if chunk:
            self._out.write(chunk)
        return len(data)

    def close(self) -> None:
        self._out.write(self._z.flush())


# pigz's layout: one gzip member whose deflate stream is cut into blocks
# compressed independently, each primed with the previous block's last 32 KiB
# (deflate's window, so the ratio stays within ~1-2% of one stream) and ended
# on a byte boundary with Z_SYNC_FLUSH, the last with Z_FINISH. zlib releases
# the GIL, so the blocks deflate on every core. They are cut at fixed
# offsets: the bytes do not depend on how many threads made them.
_GZIP_BLOCK = 1 << 20
_GZIP_WINDOW = 1 << 15
# mtime 0, no name, OS "unknown": the same tar always gives the same bytes.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _gzip_pool() -> ThreadPoolExecutor:
    """One pool per process: a writer abandoned after an error leaves no
    threads of its own behind."""
    from concurrent.futures import ThreadPoolExecutor  # a cached build compresses nothing

    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="pybuild-gzip")
        return _pool


def _deflate_block(block: bytes, window: bytes, level: int, last: bool) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=window) if window else \
        zlib.compressobj(level, zlib.DEFLATED, -15)
    return z.compress(block) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class _ParallelGzipWriter:
    def __init__(self, out: BinaryIO, level: int):
        self._out = out
        self._level = level
        self._pool = _gzip_pool()
        self._ahead = 2 * (os.cpu_count() or 1)  # blocks in flight: bounded memory
        self._pending: collections.deque = collections.deque()
        self._buffer = bytearray()
        self._window = b""
        self._crc = 0
        self._size = 0
        out.write(_GZIP_HEADER)

    def write(self, data) -> int:
        self._buffer += data
        while len(self._buffer) > _GZIP_BLOCK:  # ">": the last block is never empty unless all is
            block = bytes(self._buffer[:_GZIP_BLOCK])
            del self._buffer[:_GZIP_BLOCK]
            self._submit(block, last=False)
        return len(data)

    def _submit(self, block: bytes, last: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._size += len(block)
        self._pending.append(self._pool.submit(_deflate_block, block, self._window, self._level, last))
        self._window = block[-_GZIP_WINDOW:]
        while self._pending and (len(self._pending) > self._ahead or self._pending[0].done()):
            self._out.write(self._pending.popleft().result())

    def close(self) -> None:
        self._submit(bytes(self._buffer), last=True)
        self._buffer = bytearray()
        while self._pending:
            self._out.write(self._pending.popleft().result())
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


class _PlainWriter:
    def __init__(self, out: BinaryIO):
        self._out = out

    def write(self, data) -> int:
        return self._out.write(data)

    def close(self) -> None:
        pass


DEFAULT_LEVEL = {Compression.GZIP: 6, Compression.ZSTD: 3, Compression.UNCOMPRESSED: 0}


def compressing_writer(out: BinaryIO, compression: Compression, level: int | None = None):
    """A writer whose close() flushes the compressed stream into `out`."""
    level = DEFAULT_LEVEL[compression] if level is None else level
    if compression is Compression.GZIP:
        return _ParallelGzipWriter(out, level)
    if compression is Compression.ZSTD:
        import zstandard  # only exports that ask for zstd pay for the import

        return _CompressingWriter(out, zstandard.ZstdCompressor(level=level).compressobj())
    return _PlainWriter(out)


class DecompressionError(PybuildError):
    """A compressed layer that does not decompress: corrupt or cut short."""


# At most this much is inflated per call: a layer of zeros compressing
# 1000:1 costs time, never more memory than this (zlib's max_length).
_INFLATE_OUT = 1 << 20
_INFLATE_IN = 64 << 10


class _GzipReader:
    """A gzip stream of one or more members (pigz and some registries write
    several), inflated piece by piece."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._z = zlib.decompressobj(47)  # auto-detect gzip/zlib header
        self._fed = False  # the current member has been given input
        self._input = b""  # compressed bytes zlib has not taken yet
        self._pending = b""
        self._offset = 0

    def _fill(self) -> bool:
        """Inflate the next piece into the buffer; False at the end."""
        while True:
            if not self._input:
                self._input = self._raw.read(_INFLATE_IN)
                if not self._input:
                    if self._fed and not self._z.eof:
                        raise DecompressionError("gzip stream ends before its end (truncated)")
                    return False
            if self._z.eof:
                self._z, self._fed = zlib.decompressobj(47), False
            try:
                data = self._z.decompress(self._input, _INFLATE_OUT)
            except zlib.error as exc:
                raise DecompressionError(f"invalid gzip stream: {exc}") from None
            self._fed = True
            self._input = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            if data:
                self._pending, self._offset = data, 0
                return True

    def read(self, size: int = -1) -> bytes:
        parts = []
        wanted = size
        while wanted != 0:
            if self._offset >= len(self._pending) and not self._fill():
                break
            end = len(self._pending) if wanted < 0 else min(len(self._pending), self._offset + wanted)
            parts.append(self._pending[self._offset:end])
            if wanted > 0:
                wanted -= end - self._offset
            self._offset = end
        return b"".join(parts)


class _ZstdReader:
    """zstandard's stream reader (its output per read is what was asked for;
    its window is capped at the library's default, 128 MiB, as the zstd
    tool's), with its errors in pybuild's words."""

    def __init__(self, raw: BinaryIO):
        import zstandard  # only zstd layers pay for the import

        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except self._error as exc:
            raise DecompressionError(f"invalid zstd stream: {exc}") from None


def decompressing_reader(raw: BinaryIO, compression: Compression) -> BinaryIO:
    if compression is Compression.GZIP:
        return _GzipReader(raw)
    if compression is Compression.ZSTD:
        return _ZstdReader(raw)
    return raw
