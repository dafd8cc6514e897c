"""File names holding glob characters (tests/compat/globnames.py)."""

from compat.globnames import make  # noqa: F401
