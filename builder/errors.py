"""Errors of the builder package, one hierarchy under `PybuildError`.

The CLI catches `PybuildError` alone, prints its message and exits 1, so
every message must make sense on its own line.
"""

from __future__ import annotations


class PybuildError(Exception):
    """Base of every error the builder raises on purpose."""


class InvalidReference(PybuildError):
    """An image name that docker would refuse too."""


class RegistryError(PybuildError):
    """A registry refused, failed, or sent something we cannot trust.

    `status` is the HTTP status when there was a response, `code` the
    distribution error code (`MANIFEST_UNKNOWN`, `UNAUTHORIZED`...) when the
    registry sent one, `transient` whether trying again may help.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 transient: bool = False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient


class ExportError(PybuildError):
    """An output (OCI layout, docker archive) that could not be written."""
