"""Errors raised by the content store and the cache index."""


class CacheError(Exception):
    """Base of every error the cache package raises."""


class DigestMismatch(CacheError):
    def __init__(self, expected, actual, what="blob"):
        self.expected = expected
        self.actual = actual
        self.what = what
        super().__init__(f"{what} does not match its digest: expected {expected}, got {actual}")


class SizeMismatch(CacheError):
    def __init__(self, digest, expected, actual):
        self.digest = digest
        self.expected = expected
        self.actual = actual
        super().__init__(f"blob {digest} has {actual} bytes, expected {expected}")


class BlobNotFound(CacheError):
    def __init__(self, digest):
        self.digest = digest
        super().__init__(f"blob not found in the store: {digest}")


class InvalidDigest(CacheError):
    def __init__(self, text):
        self.text = text
        super().__init__(f"invalid digest: {text!r}")


class IndexDamaged(CacheError):
    """An sqlite file of the root (the index, the stat cache) that sqlite
    cannot read: not a database, or a malformed page."""

    def __init__(self, path, cause):
        self.path = path
        super().__init__(f"the cache database {path} is damaged ({cause}); "
                         "remove it, or the whole root, to start again")


class UnreadableDocument(CacheError):
    """A stored manifest, index or config whose bytes hash right but are no
    JSON document."""

    def __init__(self, digest, cause):
        self.digest = digest
        super().__init__(f"stored document {digest} is not valid JSON ({cause})")
