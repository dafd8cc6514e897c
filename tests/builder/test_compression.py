"""gzip for pushes and archives: one valid gzip member made on every core,
the same bytes whatever the number of threads."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import threading

import pytest

import builder.export.compression as compression
from builder.export.compression import Compression, compressing_writer, decompressing_reader

BLOCK = compression._GZIP_BLOCK


def _gzip(payload: bytes, piece: int = 65536) -> bytes:
    out = io.BytesIO()
    writer = compressing_writer(out, Compression.GZIP)
    for start in range(0, len(payload), piece):
        writer.write(payload[start:start + piece])
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345])
def test_gzip_round_trips_at_block_edges(size):
    payload = (os.urandom(size // 2) + b"lorem ipsum " * (size // 24 + 1))[:size]
    packed = _gzip(payload)
    assert gzip.decompress(packed) == payload
    assert decompressing_reader(io.BytesIO(packed), Compression.GZIP).read() == payload
    assert subprocess.run(["gzip", "-t"], input=packed).returncode == 0  # the reference tool agrees
    assert packed[:4] == b"\x1f\x8b\x08\x00" and packed[4:8] == b"\0\0\0\0"  # no mtime


def test_the_bytes_do_not_depend_on_threads_or_write_sizes(monkeypatch):
    payload = os.urandom(2 * BLOCK) + b"text " * BLOCK
    first = _gzip(payload)
    monkeypatch.setattr(compression, "_pool", None)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert _gzip(payload, piece=7919) == first
    compression._pool.shutdown()


def test_the_ratio_matches_one_stream():
    """Each block is primed with the previous one's window: compressible data
    across block edges compresses within 2% of a single stream."""
    payload = b"".join(b"record %d of a log that repeats\n" % (i % 5000) for i in range(300_000))
    assert len(_gzip(payload)) <= len(gzip.compress(payload, mtime=0)) * 1.02


def test_an_abandoned_writer_leaves_no_thread_of_its_own():
    before = {t.name for t in threading.enumerate()}
    writer = compressing_writer(io.BytesIO(), Compression.GZIP)
    writer.write(os.urandom(3 * BLOCK))
    del writer  # an error mid-layer: close() is never called
    extra = {t.name for t in threading.enumerate()} - before
    assert all(name.startswith("pybuild-gzip") for name in extra)
