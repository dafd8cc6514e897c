"""The `Digest` value type: content addresses are never bare strings."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cache.errors import InvalidDigest

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha512):([0-9a-f]+)")


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __post_init__(self):
        if _HEX_LENGTH.get(self.algorithm) != len(self.hex) or not re.fullmatch(r"[0-9a-f]+", self.hex):
            raise InvalidDigest(f"{self.algorithm}:{self.hex}")

    @classmethod
    def parse(cls, text: str) -> "Digest":
        match = _DIGEST_RE.fullmatch(text or "")  # fullmatch: `$` would let a trailing newline through
        if not match:
            raise InvalidDigest(text)
        return cls(match.group(1), match.group(2))

    @classmethod
    def of_bytes(cls, data: bytes) -> "Digest":
        return cls("sha256", hashlib.sha256(data).hexdigest())

    def hasher(self) -> "hashlib._Hash":
        """A fresh hash object of this digest's algorithm, for verifying a stream."""
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]


class DigestingWriter:
    """Wraps a binary file: every byte written is also hashed and counted."""

    def __init__(self, fileobj, algorithm: str = "sha256"):
        self._file = fileobj
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.size = 0

    def write(self, data) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self):
        self._file.flush()

    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hash.hexdigest())
