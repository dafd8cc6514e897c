"""Container paths as BuildKit cleans them: destinations, mount targets
and WORKDIRs are absolute and clean, except where BuildKit keeps the
spelling (a directory's trailing slash, an absolute WORKDIR as written)."""

from __future__ import annotations

import posixpath


def normalize_path(base: str, path: str, keep_slash: bool) -> str:
    """BuildKit's system.NormalizePath: `path` joined to `base`, absolute and
    clean; a trailing "/" (or "/.") survives when keep_slash, since it means
    "a directory"."""
    joined = posixpath.normpath(posixpath.join(base, path))
    if joined.startswith("//"):
        joined = "/" + joined.lstrip("/")
    if keep_slash and (path.endswith("/") or path.endswith("/.")) and joined != "/":
        joined += "/"
    return joined


def join_workdir(current: str, path: str) -> str:
    """BuildKit's system.NormalizeWorkdir: a relative path is joined to the
    current directory and cleaned; an absolute one is kept as written
    (`WORKDIR /a/./b/` stays "/a/./b/" in the config and the history)."""
    parent = current or "/"
    if not parent.startswith("/"):
        parent = normalize_path("/", parent, keep_slash=False)
    if not path:
        return parent
    if path.startswith("/"):
        return path
    return normalize_path(parent, path, keep_slash=False)
