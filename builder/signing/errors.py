"""The error of signing and verifying."""

from __future__ import annotations

from builder.errors import PybuildError


class SigningError(PybuildError):
    """A key that cannot be read or used (a wrong password, another curve,
    a malformed file), or a signature that cannot be made or stored."""
