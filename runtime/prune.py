"""Dropping directories a step only copied up without changing them.

Overlay copies a directory up to the upperdir as soon as anything inside it
is created, even when that thing is removed again (the /etc/hosts mount
stub of a RUN). Such a directory, empty in the upper and with the same
metadata as the one below, is no change at all; BuildKit's differ leaves it
out of the layer, and so does pybuild by removing it from the snapshot.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Sequence

from runtime import confine

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
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return None  # deeper than a path can name: kept, as a change
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
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
    mtime, xattrs) to the lower directory they cover. Returns how many.
    The upper is walked through directory fds (runtime.confine.walk): a
    step may leave a tree of any depth."""
    removed = 0
    top = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    path: list[str] = []  # names from `upper` down to the directory the walk is in
    kept = [0]  # per directory on the way: entries it still holds
    new = [False]  # per directory on the way: opaque, or below an opaque one (the lowers show nothing)
    try:
        for parent_fd, name, is_dir in confine.walk(top):
            if is_dir:
                path.append(name)
                kept.append(0)
                new.append(new[-1] or _is_opaque(_at(parent_fd, name)))
                continue
            if is_dir is not None:
                kept[-1] += 1
                continue
            rel = "/".join(path)
            path.pop()
            if kept.pop() == 0 and not new.pop() and _unchanged(parent_fd, name, rel, lowers_top_first):
                times = os.fstat(parent_fd)
                os.rmdir(name, dir_fd=parent_fd)
                # Removing a child touches the parent: keep its times comparable.
                os.utime(parent_fd, ns=(times.st_atime_ns, times.st_mtime_ns))
                removed += 1
            else:
                kept[-1] += 1
    finally:
        os.close(top)
    return removed


def _at(dir_fd: int, name: str) -> str:
    """A path for `name` in `dir_fd` for the calls without dir_fd (xattrs);
    only `name` is looked up, and it is never followed by those calls."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _unchanged(parent_fd: int, name: str, rel: str, lowers_top_first: Sequence[Path]) -> bool:
    below = _visible_below(rel, lowers_top_first)
    if below is None:
        return False
    mine = os.lstat(name, dir_fd=parent_fd)
    same = (mine.st_mode == below.st_mode and mine.st_uid == below.st_uid
            and mine.st_gid == below.st_gid and mine.st_mtime_ns == below.st_mtime_ns)
    return same and _xattrs(_at(parent_fd, name)) == _lower_xattrs(rel, lowers_top_first)


def _lower_xattrs(rel: str, lowers_top_first: Sequence[Path]) -> dict[str, bytes]:
    for lower in lowers_top_first:
        path = os.path.join(lower, rel)
        if os.path.lexists(path):
            return _xattrs(path)
    return {}
