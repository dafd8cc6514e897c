"""Owner, mode, xattrs and times of an entry of a confined tree, set on the
entry itself: by its name relative to its parent's fd, never following it,
or through an fd of it (runtime.confine's rule for metadata)."""

from __future__ import annotations

import errno
import os
import stat
# Loaded by the sandbox helper with runtime.confine: see its note on typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def set_metadata(dir_fd: int, name: bytes, *, uid: int | None = None, gid: int | None = None,
                 mode: int | None = None, mtime_ns: int | None = None, atime_ns: int | None = None,
                 xattrs: Iterable[tuple[str, bytes]] = (), skip_unsupported_xattrs: bool = False,
                 skip_refused_xattrs: bool = False) -> None:
    """Owner, then mode (chown clears setuid bits), then xattrs (chown clears
    security.capability), then times, of `name` in `dir_fd` itself: a
    symlink gets its own owner, xattrs and times, and no mode (Linux has
    none for symlinks). `skip_unsupported_xattrs`: an xattr the filesystem
    does not support (EOPNOTSUPP) is left out, as containerd's archive
    extraction does; `skip_refused_xattrs`: one it refuses (EPERM: trusted.*
    or security.* without the capability) too, as BuildKit's copy does; any
    other refusal is an OSError naming the xattr."""
    skip = _skipped_xattr_errors(skip_unsupported_xattrs, skip_refused_xattrs)
    if uid is not None or gid is not None:
        os.chown(name, -1 if uid is None else uid, -1 if gid is None else gid, dir_fd=dir_fd,
                 follow_symlinks=False)
    xattrs = list(xattrs)
    if mode is not None or xattrs:
        fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
        try:
            is_link = stat.S_ISLNK(os.fstat(fd).st_mode)
            # The O_PATH fd's magic link names this very inode: a symlink
            # swapped in after the open cannot redirect it.
            if mode is not None and not is_link:
                os.chmod(f"/proc/self/fd/{fd}", mode & 0o7777)
            if is_link:
                _set_xattrs(f"/proc/self/fd/{dir_fd}/".encode() + name, xattrs, skip,
                            follow_symlinks=False)
            else:
                _set_xattrs(f"/proc/self/fd/{fd}", xattrs, skip)
        finally:
            os.close(fd)
    if mtime_ns is not None:
        os.utime(name, ns=(mtime_ns if atime_ns is None else atime_ns, mtime_ns), dir_fd=dir_fd,
                 follow_symlinks=False)


def set_fd_metadata(fd: int, *, uid: int | None = None, gid: int | None = None, mode: int | None = None,
                    mtime_ns: int | None = None, atime_ns: int | None = None,
                    xattrs: Iterable[tuple[str, bytes]] = (), skip_unsupported_xattrs: bool = False,
                    skip_refused_xattrs: bool = False) -> None:
    """As set_metadata, in the same order, through an fd of the file or
    directory itself (opened for reading or writing, not O_PATH): no name is
    looked up, so nothing swapped in under one can receive it. The cheap
    form for a file just written or a directory just opened."""
    if uid is not None or gid is not None:
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None:
        os.fchmod(fd, mode & 0o7777)
    _set_xattrs(fd, xattrs, _skipped_xattr_errors(skip_unsupported_xattrs, skip_refused_xattrs))
    if mtime_ns is not None:
        os.utime(fd, ns=(mtime_ns if atime_ns is None else atime_ns, mtime_ns))


def _skipped_xattr_errors(unsupported: bool, refused: bool) -> tuple[int, ...]:
    if refused:
        return errno.EOPNOTSUPP, errno.EPERM
    return (errno.EOPNOTSUPP,) if unsupported else ()


def _set_xattrs(target, xattrs: Iterable[tuple[str, bytes]], skip: tuple[int, ...], **how) -> None:
    for key, value in xattrs:
        try:
            os.setxattr(target, key, value, **how)
        except OSError as exc:
            if exc.errno in skip:
                continue
            # The fd or /proc path in the message would say nothing.
            raise OSError(exc.errno, f"setxattr {key}: {exc.strerror}") from None
