"""Errors of the builder package, one hierarchy under `PybuildError`.

The CLI catches `PybuildError` alone, prints its message and exits 1, so
every message must make sense on its own line.

frontend/, cache/ and runtime/ cannot import this module (imports point one
way), so their errors have bases of their own. Where the builder calls into
them, their errors and the host's OSError are translated into the classes
below (`translated_errors`), the original kept as `cause` and its message
unchanged; whatever a build step raises becomes a `StepFailed`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from frontend.errors import Location


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


# -- what other packages (and the host) raised, as the builder reports it -------------


class TranslatedError(PybuildError):
    """An error of frontend/, cache/, runtime/ or the host, met where the
    builder called them; `cause` is the original, whose message this keeps."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class DefinitionError(TranslatedError):
    """The frontend refused the Dockerfile or the context it reads (a
    frontend.errors.FrontendError). `location`: the Dockerfile lines it
    names, when it names some; its message starts with them."""

    @property
    def location(self) -> Location | None:
        from frontend.errors import DockerfileError

        return self.cause.location if isinstance(self.cause, DockerfileError) else None


class StoreError(TranslatedError):
    """The content store or the cache index failed (a cache.errors.CacheError)."""


class HostError(TranslatedError):
    """The runtime (snapshots, mounts, layers, processes) or the host's
    filesystem failed: a runtime.errors.RuntimeFailure or an OSError."""


class StepFailed(PybuildError):
    """A build step failed: `vertex` is the step's id, `location` the
    Dockerfile lines of its instruction (when the build knows them, as
    BuildKit shows them), `cause` what the step raised, whose message this
    keeps (ExecFailed's `exit_code` and `tail` are read there)."""

    def __init__(self, vertex: str, location: Location | None, cause: BaseException):
        super().__init__(str(cause))
        self.vertex = vertex
        self.location = location
        self.cause = cause

    def at(self, location: Location | None) -> StepFailed:
        """The same failure, placed in the Dockerfile."""
        return StepFailed(self.vertex, location, self.cause)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Every error a build can meet that is a fault of its input, its
    configuration or the host, rather than a bug of pybuild."""
    return (PybuildError, *_foreign_bases())


def _foreign_bases() -> tuple[type[BaseException], ...]:
    # Imported when asked: importing frontend loads all of it (~80 ms), which
    # the memo's replay (builder.root.replay), a user of this module, never needs.
    from cache.errors import CacheError
    from frontend.errors import FrontendError
    from runtime.errors import RuntimeFailure

    return FrontendError, CacheError, RuntimeFailure, OSError


def _translate(error: BaseException) -> BaseException:
    """`error` as a PybuildError when it is one of the expected_errors();
    anything else (a bug, KeyboardInterrupt) is returned as it is."""
    from cache.errors import CacheError
    from frontend.errors import FrontendError
    from runtime.errors import RuntimeFailure

    if isinstance(error, PybuildError):
        return error
    if isinstance(error, FrontendError):
        return DefinitionError(error)
    if isinstance(error, CacheError):
        return StoreError(error)
    if isinstance(error, (RuntimeFailure, OSError)):
        return HostError(error)
    return error


@contextmanager
def translated_errors() -> Iterator[None]:
    """Around a call into frontend/, cache/ or runtime/ (or the host):
    their errors leave it as PybuildErrors, chained to the original."""
    try:
        yield
    except _foreign_bases() as exc:  # evaluated only when something was raised
        raise _translate(exc) from exc
