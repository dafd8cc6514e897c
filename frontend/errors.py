"""Errors of the frontend: every one points at a place in the Dockerfile."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """1-based, inclusive line range of an instruction in a Dockerfile."""

    path: str
    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.path}:{self.start}"


# An error raised by a callback the frontend calls (the image resolver, a
# registry's) is not the frontend's, but the instruction that needed it is
# known: BuildKit names that line. It rides on the exception unchanged.
_LOCATION = "dockerfile_location"


def locate(exc: BaseException, location: Location) -> None:
    """Mark `exc` as raised for the instruction at `location` (the first
    mark wins: the innermost instruction)."""
    if getattr(exc, _LOCATION, None) is None:
        setattr(exc, _LOCATION, location)


def located(exc: BaseException) -> Location | None:
    """The instruction `exc`, or an exception it was raised from, was marked with."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        location = getattr(exc, _LOCATION, None)
        if location is not None:
            return location
        exc = exc.__cause__ or exc.__context__
    return None


class FrontendError(Exception):
    """Base of every error the frontend raises."""


class DockerfileError(FrontendError):
    """A Dockerfile that cannot be built, with the place it went wrong.
    `warnings`: what the build checks had found before it (`pybuild check`
    shows them with the error, as `docker build --check` does)."""

    warnings: tuple = ()

    def __init__(self, message: str, location: Location | None = None):
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class ContextError(FrontendError):
    """A build context that cannot be read as asked (missing file, escape)."""
