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
