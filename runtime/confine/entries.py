"""Acting on the entries of a confined tree through their parent's fd,
never following them (runtime.confine's rule): an entry's owner, mode,
xattrs and times, and walking or removing a tree of any depth."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
# Loaded by the sandbox helper with runtime.confine: see its note on typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


# -- metadata

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
        with _mapped(uid, gid):
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
        with _mapped(uid, gid):
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None:
        os.fchmod(fd, mode & 0o7777)
    _set_xattrs(fd, xattrs, _skipped_xattr_errors(skip_unsupported_xattrs, skip_refused_xattrs))
    if mtime_ns is not None:
        os.utime(fd, ns=(mtime_ns if atime_ns is None else atime_ns, mtime_ns))


@contextlib.contextmanager
def _mapped(uid: int | None, gid: int | None):
    """A chown to an id the user namespace does not map fails with a bare
    EINVAL: name the ids and the fix (rootless: runtime/userns.py)."""
    try:
        yield
    except OSError as exc:
        # Imported on this error only: the sandbox helper loads this module.
        from runtime.userns import in_user_namespace, unmapped_message

        if exc.errno != errno.EINVAL or not in_user_namespace():
            raise
        raise OSError(errno.EINVAL, unmapped_message(uid, gid), exc.filename) from None


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


# -- removing

def remove(dir_fd: int, name: bytes | str) -> None:
    """rm -rf of `name` in `dir_fd`: symlinks are unlinked, never followed;
    directories are emptied through their own fds (opened O_NOFOLLOW), and
    made searchable first where a mode 000 directory stops that."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = _open_dir_at(dir_fd, name, open_up=True)
    if fd is None:
        return
    try:
        empty_dir(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def empty_dir(fd: int) -> None:
    """Remove everything inside the directory `fd`, never following a symlink."""
    for parent, name, is_dir in walk(fd, open_up=True):
        if is_dir is None:
            _remove_name(os.rmdir, parent, name)
        elif not is_dir:
            _remove_name(os.unlink, parent, name)


def _remove_name(remove_call, dir_fd: int, name: str) -> None:
    try:
        remove_call(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except PermissionError:
        # A 0555 directory (a layer may carry one), for a user without
        # CAP_DAC_OVERRIDE: open it up, as rm -rf would need to.
        os.fchmod(dir_fd, 0o700)
        remove_call(name, dir_fd=dir_fd)


# -- walking a tree of any depth

# fds a walk holds below its top: an ancestor further up is closed and
# opened again through `..` of its child when the walk returns to it.
_WALK_OPEN_DIRS = 32


class DirStack:
    """The directory fds of a depth-first walk, from where it started down
    to where it is, each with the caller's data: at most _WALK_OPEN_DIRS+1
    of them open, however deep the walk goes. Going deeper closes the fd
    of an ancestor far up; coming back to it opens it again through `..`
    of the directory left, which must be the very directory closed
    (st_dev, st_ino): one moved meanwhile is an OSError (ESTALE), never a
    walk going on elsewhere. The stack owns its fds."""

    def __init__(self, fd: int, data=None):
        self._fds = [fd]  # -1 while closed
        self._ids: list[tuple[int, int] | None] = [None]  # (st_dev, st_ino) of a closed one
        self._data = [data]

    def __len__(self) -> int:
        return len(self._fds)

    @property
    def fd(self) -> int:
        """The directory the walk is in (always open)."""
        return self._fds[-1]

    @property
    def data(self):
        return self._data[-1]

    def push(self, fd: int, data=None) -> None:
        """Go into the directory `fd` (the stack's from now on)."""
        self._fds.append(fd)
        self._ids.append(None)
        self._data.append(data)
        far = len(self._fds) - _WALK_OPEN_DIRS - 2
        if far > 0 and self._fds[far] >= 0:
            info = os.fstat(self._fds[far])
            self._ids[far] = (info.st_dev, info.st_ino)
            os.close(self._fds[far])
            self._fds[far] = -1

    def pop(self) -> tuple[int, object]:
        """Leave the directory the walk is in: (its fd, now the caller's to
        close, its data). The one below is open again on return."""
        fd = self._fds[-1]
        if len(self._fds) > 1 and self._fds[-2] < 0:
            self._fds[-2] = _reopen_parent(fd, self._ids[-2])
        self._fds.pop()
        self._ids.pop()
        return fd, self._data.pop()

    def truncate(self, size: int) -> None:
        """Go back up to the directory `size` levels from the start (1: where
        the stack started), closing those below it; it is open again on
        return, reopened upwards from the nearest open one if need be."""
        top = size - 1
        if self._fds[top] < 0:
            # Closed ones are the shallowest below the start: open ones are below them.
            below = next(level for level in range(top + 1, len(self._fds)) if self._fds[level] >= 0)
            for level in range(below - 1, top - 1, -1):
                self._fds[level] = _reopen_parent(self._fds[level + 1], self._ids[level])
        while len(self._fds) > size:
            fd = self._fds.pop()
            self._ids.pop()
            self._data.pop()
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        while self._fds:
            fd = self._fds.pop()
            if fd >= 0:
                os.close(fd)
        self._ids.clear()
        self._data.clear()


def walk(top_fd: int, *, open_up: bool = False):
    """Every entry below the directory `top_fd`, depth first, never
    following a symlink: yields (fd of its directory, name, is_dir) for
    each entry, and, once the walk has been through a directory's entries,
    (fd of its directory, its name, None). The fds are the walk's own,
    valid until the next step; the consumer may remove what it is given
    (a directory's entries are listed when the walk enters it). Iterative,
    on a DirStack: a tree may be any number of levels deep. `open_up`: a
    directory that cannot be opened for lack of permission is made 0700
    first (for removing it)."""
    top = os.dup(top_fd)
    try:
        stack = DirStack(top, (None, _listing(top)))
    except BaseException:
        os.close(top)
        raise
    try:
        while True:
            entries = stack.data[1]
            if entries:
                name, is_dir = entries.pop()
                yield stack.fd, name, is_dir
                if not is_dir:
                    continue
                fd = _open_dir_at(stack.fd, name, open_up)
                if fd is None:  # gone meanwhile
                    yield stack.fd, name, None
                    continue
                stack.push(fd, (name, []))
                stack.data[1].extend(_listing(fd))
                continue
            if len(stack) == 1:
                return
            fd, (name, _) = stack.pop()
            os.close(fd)
            yield stack.fd, name, None
    finally:
        stack.close()


def _listing(fd: int) -> list[tuple[str, bool]]:
    # d_type where the filesystem gives it, an fstatat where it does not
    with os.scandir(fd) as entries:
        return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]


def _open_dir_at(dir_fd: int, name: str | bytes, open_up: bool) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except PermissionError:
        if not open_up:
            raise
    set_metadata(dir_fd, os.fsencode(name), mode=0o700)
    return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)


def _reopen_parent(child_fd: int, identity: tuple[int, int]) -> int:
    fd = os.open("..", _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=child_fd)
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != identity:
        os.close(fd)
        raise OSError(errno.ESTALE, "a directory moved while its tree was walked")
    return fd
