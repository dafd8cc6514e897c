"""Where a remote or stdin build context is fetched: ROOT/tmp/context-TOKEN-XXXXXXXX,
named with the lease token of the process that fetches it (runtime/lease.py).

The name is what lets the next process to open the root tell a dead
maker's directory from a live one's: builder/root/reclaim.py removes those
of dead makers, and builder/root/doctor.py never takes one for a stray
temporary."""

from __future__ import annotations

import tempfile
from pathlib import Path

from runtime import lease

CONTEXT_PREFIX = "context-"  # followed by the maker's lease token


def make_context_scratch(root: Path) -> Path:
    """A new directory for this process to fetch a context into; the caller
    holds its lease on `root` and removes the directory when done."""
    return Path(tempfile.mkdtemp(prefix=f"{CONTEXT_PREFIX}{lease.token()}-", dir=Path(root) / "tmp"))


def is_context_scratch(name: str) -> bool:
    return name.startswith(CONTEXT_PREFIX)


def scratch_owner(name: str) -> str | None:
    """The lease token in the name of a context's scratch directory."""
    if not is_context_scratch(name):
        return None
    owner = name[len(CONTEXT_PREFIX):].split("-", 1)[0]
    return owner if lease.is_token(owner) else None
