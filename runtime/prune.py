"""Dropping directories a step only copied up without changing them.

Overlay copies a directory up to the upperdir as soon as anything inside it
is created, even when that thing is removed again (the /etc/hosts mount
stub of a RUN). Such a directory, empty in the upper and with the same
mode, owner and xattrs as the one below, whatever its mtime, is no change
at all; BuildKit's differ leaves it out of the layer, and so does pybuild
by removing it from the snapshot.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Sequence

from runtime import confine
from runtime.whiteouts import OPAQUE_XATTR, OVERLAY_XATTR_PREFIXES

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if not n.startswith(OVERLAY_XATTR_PREFIXES)}


def _is_opaque(target: str | int) -> bool:
    """Whether the directory `target` (a path, not followed, or an fd) is opaque."""
    try:
        if isinstance(target, int):
            return os.getxattr(target, OPAQUE_XATTR) == b"y"
        return os.getxattr(target, OPAQUE_XATTR, follow_symlinks=False) == b"y"
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
    xattrs) to the lower directory they cover. Returns how many.
    The upper is walked through directory fds on a runtime.confine.DirStack:
    a step may leave a tree of any depth."""
    removed = 0
    top = os.open(upper, _DIR_FLAGS)
    try:
        # Per directory on the way down: [its name, its subdirectories not
        # visited yet, the entries it still holds once they are, whether the
        # lowers show nothing there (it or a parent of it is opaque)].
        stack = confine.DirStack(top, ["", *_listing(top), False])
    except BaseException:
        os.close(top)
        raise
    path: list[str] = []  # names from `upper` down to the directory the walk is in
    try:
        while True:
            here = stack.data
            if here[1]:
                name = here[1].pop()
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=stack.fd)
                except FileNotFoundError:
                    continue
                stack.push(fd, [name, [], 0, here[3]])
                path.append(name)
                stack.data[1:3] = _listing(fd)
                stack.data[3] = here[3] or _is_opaque(fd)
                continue
            if len(stack) == 1:
                return removed
            fd, (name, _, kept, new) = stack.pop()
            os.close(fd)
            rel = "/".join(path)
            path.pop()
            if kept == 0 and not new and _unchanged(stack.fd, name, rel, lowers_top_first):
                times = os.fstat(stack.fd)
                os.rmdir(name, dir_fd=stack.fd)
                # Removing a child touches the parent: keep its times comparable.
                os.utime(stack.fd, ns=(times.st_atime_ns, times.st_mtime_ns))
                removed += 1
            else:
                stack.data[2] += 1
    finally:
        stack.close()


def _listing(fd: int) -> tuple[list[str], int]:
    """(the subdirectories of the directory `fd`, how many other entries)."""
    subdirs: list[str] = []
    others = 0
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                others += 1
    return subdirs, others


def _at(dir_fd: int, name: str) -> str:
    """A path for `name` in `dir_fd` for the calls without dir_fd (xattrs);
    only `name` is looked up, and it is never followed by those calls."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _unchanged(parent_fd: int, name: str, rel: str, lowers_top_first: Sequence[Path]) -> bool:
    below = _visible_below(rel, lowers_top_first)
    if below is None:
        return False
    mine = os.lstat(name, dir_fd=parent_fd)
    # Not the mtime: BuildKit 0.13's differ leaves out a directory whose
    # mtime is all that changed (testdata/compat/run-dir-mtime-only-change).
    same = mine.st_mode == below.st_mode and mine.st_uid == below.st_uid and mine.st_gid == below.st_gid
    return same and _xattrs(_at(parent_fd, name)) == _lower_xattrs(rel, lowers_top_first)


def _lower_xattrs(rel: str, lowers_top_first: Sequence[Path]) -> dict[str, bytes]:
    for lower in lowers_top_first:
        path = os.path.join(lower, rel)
        if os.path.lexists(path):
            return _xattrs(path)
    return {}
