"""Layer compression: one place that knows gzip, zstd and plain tar."""

from __future__ import annotations

import enum
import zlib
from typing import BinaryIO

from builder import image as media


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
        # wbits=31: a gzip header with mtime 0 and no file name, so the same
        # tar always compresses to the same bytes.
        return _CompressingWriter(out, zlib.compressobj(level, zlib.DEFLATED, 31))
    if compression is Compression.ZSTD:
        import zstandard  # only exports that ask for zstd pay for the import

        return _CompressingWriter(out, zstandard.ZstdCompressor(level=level).compressobj())
    return _PlainWriter(out)


class _GzipReader:
    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._z = zlib.decompressobj(47)  # auto-detect gzip/zlib header
        self._pending = b""
        self._offset = 0

    def _fill(self) -> bool:
        """Decompress the next piece into the buffer; False at the end."""
        while True:
            if self._z.eof:
                # A gzip stream may hold several members (pigz and some
                # registries write them); continue with the next one.
                rest = self._z.unused_data or self._raw.read(1 << 20)
                if not rest:
                    return False
                self._z = zlib.decompressobj(47)
            else:
                rest = self._raw.read(1 << 20)
                if not rest:
                    tail = self._z.flush()
                    self._pending, self._offset = tail, 0
                    return bool(tail)
            data = self._z.decompress(rest)
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


def decompressing_reader(raw: BinaryIO, compression: Compression) -> BinaryIO:
    if compression is Compression.GZIP:
        return _GzipReader(raw)
    if compression is Compression.ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw
