"""Dropping directories a step only copied up without changing them.

Overlay copies a directory up to the upperdir as soon as anything inside it
is created, even when that thing is removed again (the /etc/hosts mount
stub of a RUN). Such a directory, empty in the upper and with the same
metadata as the one below, is no change at all; BuildKit's differ leaves it
out of the layer, and so does pybuild by removing it from the snapshot.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence

_OPAQUE = "trusted.overlay.opaque"


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if not n.startswith("trusted.overlay.")}


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _visible_below(rel: str, lowers_top_first: Sequence[Path]) -> os.stat_result | None:
    """The lower directory the merged view shows at `rel`, or None when there
    is none, it is not a directory, or the answer is not certain."""
    parts = rel.split("/")
    for lower in lowers_top_first:
        path = os.path.join(lower, rel)
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            # Hidden further down if an ancestor here is opaque or whited out
            # (NotADirectoryError: the ancestor is a whiteout or a file, as
            # when a step made again a tree an earlier step removed).
            for depth in range(1, len(parts)):
                ancestor = os.path.join(lower, *parts[:depth])
                try:
                    a_info = os.lstat(ancestor)
                except FileNotFoundError:
                    break
                if not stat.S_ISDIR(a_info.st_mode) or _is_opaque(ancestor):
                    return None
            continue
        if not stat.S_ISDIR(info.st_mode):
            return None  # a whiteout or a file: the upper dir is a real change
        return info
    return None


def prune_unchanged_dirs(upper: Path, lowers_top_first: Sequence[Path]) -> int:
    """Remove, deepest first, empty upper directories identical (mode, owner,
    mtime, xattrs) to the lower directory they cover. Returns how many."""
    removed = 0
    upper = str(upper)
    for current, dirs, files in os.walk(upper, topdown=False):
        if current == upper or files or os.listdir(current):
            continue
        if _is_opaque(current):
            continue
        rel = os.path.relpath(current, upper)
        if _under_opaque(upper, rel):
            continue  # the lowers show nothing here: the directory is new
        below = _visible_below(rel, lowers_top_first)
        if below is None:
            continue
        mine = os.lstat(current)
        same = (mine.st_mode == below.st_mode and mine.st_uid == below.st_uid
                and mine.st_gid == below.st_gid and mine.st_mtime_ns == below.st_mtime_ns)
        if same and _xattrs(current) == _lower_xattrs(rel, lowers_top_first):
            parent = os.path.dirname(current)
            times = os.lstat(parent)
            os.rmdir(current)
            # Removing a child touches the parent: keep its times comparable.
            os.utime(parent, ns=(times.st_atime_ns, times.st_mtime_ns), follow_symlinks=False)
            removed += 1
    return removed


def _under_opaque(upper: str, rel: str) -> bool:
    parts = rel.split("/")
    return any(_is_opaque(os.path.join(upper, *parts[:depth])) for depth in range(1, len(parts)))


def _lower_xattrs(rel: str, lowers_top_first: Sequence[Path]) -> dict[str, bytes]:
    for lower in lowers_top_first:
        path = os.path.join(lower, rel)
        if os.path.lexists(path):
            return _xattrs(path)
    return {}
