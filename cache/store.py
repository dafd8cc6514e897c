"""The content-addressed blob store.

A blob is either complete and correct at `blobs/<alg>/<hex>` or absent:
every write goes to a temp file inside the store, is hashed while written,
verified, fsynced and renamed into place (rename is atomic on one
filesystem, and writing the same blob twice is harmless).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from cache.digest import Digest, DigestingWriter
from cache.errors import BlobNotFound, DigestMismatch, SizeMismatch

_CHUNK = 1 << 20


class BlobWriter:
    """Streams one blob into the store; `commit()` verifies and publishes it.

    Leaving the `with` block without a commit discards the temp file, so an
    interrupted download or a failed export leaves nothing behind.
    """

    def __init__(self, store: "ContentStore", expected: Digest | None, size: int | None):
        self._store = store
        self._expected = expected
        self._expected_size = size
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=store.tmp_dir)
        self._tmp = Path(name)
        self._raw = os.fdopen(fd, "wb")
        self._writer = DigestingWriter(self._raw, expected.algorithm if expected else "sha256")
        self.digest: Digest | None = None

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, data) -> int:
        return self._writer.write(data)

    def commit(self) -> Digest:
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        actual = self._writer.digest()
        if self._expected is not None and actual != self._expected:
            self._discard()
            raise DigestMismatch(self._expected, actual)
        if self._expected_size is not None and self.size != self._expected_size:
            self._discard()
            raise SizeMismatch(actual, self._expected_size, self.size)
        final = self._store.path(actual)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, final)
        self.digest = actual
        return actual

    def _discard(self):
        if not self._raw.closed:
            self._raw.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc):
        if self.digest is None:
            self._discard()
        return False


class ContentStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp_dir = self.root / "ingest"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def writer(self, expected: Digest | None = None, size: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected, size)

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        digest = expected or Digest.of_bytes(data)
        if self.has(digest):
            return digest
        with self.writer(expected) as w:
            w.write(data)
            return w.commit()

    def put_stream(self, stream: BinaryIO, expected: Digest | None = None, size: int | None = None) -> Digest:
        if expected is not None and self.has(expected):
            return expected
        with self.writer(expected, size) as w:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                w.write(chunk)
            return w.commit()

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def read_bytes(self, digest: Digest) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[Digest]:
        base = self.root / "blobs"
        if not base.is_dir():
            return
        for alg_dir in base.iterdir():
            for blob in alg_dir.iterdir():
                yield Digest(alg_dir.name, blob.name)

    def verify(self, digest: Digest) -> bool:
        """Re-hash a stored blob (for `doctor`); False when it is corrupt."""
        h = digest.hasher()
        with self.open(digest) as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        return h.hexdigest() == digest.hex
