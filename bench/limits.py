"""Physical limits of the machine: what no builder can beat.

Single-core gzip (zlib level 6, what pybuild and docker use by default) and
zstd (level 3) throughput on 256 MB, sha256, and disk write (with fsync) and
read throughput. Data: half incompressible, half repetitive text, like the
big-context scenario's 1 MB files; pure random data is measured too.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
import zlib
from pathlib import Path


def _data(size: int, kind: str) -> bytes:
    rng = random.Random(4)
    if kind == "random":
        return b"".join(rng.randbytes(1 << 20) for _ in range(size >> 20))
    text = b"lorem ipsum dolor sit amet, consectetur adipiscing elit; " * 18000
    half = 1 << 19
    parts = []
    for _ in range(size // (2 * half)):
        parts.append(rng.randbytes(half))
        parts.append(text[:half])
    return b"".join(parts)


def _rate(size: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return size / (time.perf_counter() - start) / 1e6


def measure(size: int = 256 << 20, work: Path | None = None) -> dict:
    out: dict[str, float] = {}
    for kind in ("mixed", "random"):
        data = _data(size, kind)
        view = memoryview(data)

        def gz():
            z = zlib.compressobj(6, zlib.DEFLATED, 31)
            for i in range(0, size, 1 << 20):
                z.compress(view[i:i + (1 << 20)])
            z.flush()

        out[f"gzip-6 {kind} MB/s"] = round(_rate(size, gz), 1)
        try:
            import zstandard

            def zs():
                z = zstandard.ZstdCompressor(level=3).compressobj()
                for i in range(0, size, 1 << 20):
                    z.compress(view[i:i + (1 << 20)])
                z.flush()

            out[f"zstd-3 {kind} MB/s"] = round(_rate(size, zs), 1)
        except ImportError:
            pass
        if kind == "mixed":
            out["sha256 MB/s"] = round(_rate(size, lambda: hashlib.sha256(data).digest()), 1)
            out["gunzip-6 mixed MB/s"] = round(_rate(size, lambda d=zlib.compress(data, 6): zlib.decompress(d)), 1)
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                path = Path(tmp) / "disk-test"

                def write():
                    with open(path, "wb") as f:
                        for i in range(0, size, 1 << 20):
                            f.write(view[i:i + (1 << 20)])
                        f.flush()
                        os.fsync(f.fileno())

                out["disk write+fsync MB/s"] = round(_rate(size, write), 1)
                # Page-cached read: what a re-hash of an unchanged file costs at best.
                out["read (page cache) MB/s"] = round(_rate(size, lambda: path.read_bytes()), 1)
    return out
