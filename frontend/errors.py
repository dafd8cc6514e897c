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
