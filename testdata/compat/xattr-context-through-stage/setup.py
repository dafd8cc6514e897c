"""xattrs on context files (tests/compat/contextxattrs.py)."""

from compat.contextxattrs import make  # noqa: F401
