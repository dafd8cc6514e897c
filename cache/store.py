"""The content-addressed blob store.

A blob is either complete and correct at `blobs/<alg>/<hex>` or absent:
every write goes to a temp file inside the store, is hashed while written,
verified, fsynced and renamed into place (rename is atomic on one
filesystem, and writing the same blob twice is harmless).

A blob can also be *lazy*: `lazy/<alg>/<hex>` holds a recipe (JSON: its
size and how to make it) instead of the bytes. A layer built into the
local image store is one: its bytes are a deterministic tar of a snapshot
that the store keeps anyway, so writing them out would only cost time and
disk until something ships them. `open()` makes the blob from the recipe
through the `materializer` the worker sets, verifying digest and size as
any write does; after that the blob is an ordinary one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from cache.digest import Digest, DigestingWriter
from cache.errors import BlobNotFound, DigestMismatch, SizeMismatch, UnreadableDocument

_CHUNK = 1 << 20


def _temporary(directory) -> tuple[int, str]:
    """A new file to write and then rename into place. tempfile (shutil,
    random: ~5 ms) is imported by a process that writes, not by the memo's
    replay, which only asks what the store has."""
    import tempfile

    return tempfile.mkstemp(prefix=".tmp-", dir=directory)


class Materializer(Protocol):
    def available(self, recipe: dict) -> bool:
        """Can `make` still produce the blob (its sources exist)?"""

    def make(self, recipe: dict, writer: "BlobWriter") -> bool:
        """Write the blob's bytes to `writer` (the store commits them);
        False when the sources are gone."""


class BlobWriter:
    """Streams one blob into the store; `commit()` verifies and publishes it.

    Leaving the `with` block without a commit discards the temp file, so an
    interrupted download or a failed export leaves nothing behind.
    """

    def __init__(self, store: "ContentStore", expected: Digest | None, size: int | None):
        self._store = store
        self._expected = expected
        self._expected_size = size
        fd, name = _temporary(store.tmp_dir)
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
    def __init__(self, root: Path, materializer: Materializer | None = None):
        self.root = Path(root)
        self.tmp_dir = self.root / "ingest"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.materializer = materializer

    def path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def _recipe_path(self, digest: Digest) -> Path:
        return self.root / "lazy" / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path(digest).is_file() or self._recipe_path(digest).is_file()

    def is_lazy(self, digest: Digest) -> bool:
        """Known by its recipe only: no bytes on disk yet."""
        return not self.path(digest).is_file() and self._recipe_path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            pass
        recipe = self.recipe(digest)
        if recipe is None:
            raise BlobNotFound(digest)
        return recipe["size"]

    def recipe(self, digest: Digest) -> dict | None:
        """How to make a lazy blob; None when there is no recipe or it is
        unreadable (damaged, or left empty by a crash: put_lazy does not
        fsync), which makes the blob missing for every caller alike."""
        try:
            recipe = json.loads(self._recipe_path(digest).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(recipe, dict) or not isinstance(recipe.get("size"), int):
            return None
        return recipe

    def put_lazy(self, digest: Digest, size: int, recipe: dict) -> None:
        """Record how to make `digest` (`size` bytes) instead of its bytes."""
        if self.path(digest).is_file():
            return
        target = self._recipe_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = _temporary(self.tmp_dir)
        with os.fdopen(fd, "w") as f:
            json.dump({**recipe, "size": size}, f, sort_keys=True)
        os.replace(name, target)

    def materialize(self, digest: Digest) -> None:
        """Make a lazy blob an ordinary one (nothing to do for those)."""
        if self.path(digest).is_file():
            return
        recipe = self.recipe(digest)
        if recipe is None or self.materializer is None:
            raise BlobNotFound(digest)
        with self.writer(digest, recipe["size"]) as blob:
            if not self.materializer.make(recipe, blob):
                raise BlobNotFound(digest)
            blob.commit()
        self._recipe_path(digest).unlink(missing_ok=True)

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
            pass
        self.materialize(digest)
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def read_bytes(self, digest: Digest) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def read_json(self, digest: Digest):
        """A stored manifest, index or config, checked against its digest
        (hashing a few KiB costs microseconds, and a blob damaged on disk
        must not be read as a different image) and decoded."""
        data = self.read_bytes(digest)
        hasher = digest.hasher()
        hasher.update(data)
        if hasher.hexdigest() != digest.hex:
            raise DigestMismatch(digest, Digest(digest.algorithm, hasher.hexdigest()), "stored document")
        try:
            return json.loads(data)
        except ValueError as exc:  # not UTF-8, or not JSON
            raise UnreadableDocument(digest, exc) from None

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)
        self._recipe_path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[Digest]:
        """Every blob with bytes on disk."""
        yield from self._listed(self.root / "blobs")

    def lazy_digests(self) -> Iterator[Digest]:
        """Every blob known by its recipe only."""
        for digest in self._listed(self.root / "lazy"):
            if not self.path(digest).is_file():
                yield digest

    @staticmethod
    def _listed(base: Path) -> Iterator[Digest]:
        if not base.is_dir():
            return
        for alg_dir in base.iterdir():
            for blob in alg_dir.iterdir():
                yield Digest(alg_dir.name, blob.name)

    def verify(self, digest: Digest) -> bool:
        """Re-hash a stored blob (for `doctor`); False when it is corrupt.
        A lazy blob is sound while its recipe's sources exist."""
        if self.is_lazy(digest):
            recipe = self.recipe(digest)
            return bool(recipe and self.materializer and self.materializer.available(recipe))
        h = digest.hasher()
        with self.open(digest) as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        return h.hexdigest() == digest.hex

