"""Confined file operations on a tree that untrusted input shaped.

A base image's layers, an ADD archive and every RUN step can plant
symlinks (`etc -> /etc`, `x -> ../../..`) in the tree pybuild later writes
into as root. Every host-side operation on such a tree goes through this
module, and it never lets the kernel follow a planted symlink out:

- Paths are resolved with openat2(2) and RESOLVE_IN_ROOT, the tree's
  directory fd standing for `/`: absolute symlinks and `..` stay inside, in
  the kernel, without races. RESOLVE_NO_MAGICLINKS keeps `/proc/self/...`
  style links from jumping anywhere. Where the kernel lacks openat2 (before
  5.6) the same walk is done component by component with O_NOFOLLOW, the
  symlinks read and resolved here against the root.
- An operation on a final name happens relative to its parent's fd, never
  following that name: `os.*(name, dir_fd=parent, follow_symlinks=False)`.
  chmod and setxattr, which have no such form for every file type, go
  through an O_PATH fd of the name, opened with O_NOFOLLOW and checked not
  to be a symlink first.

Paths given to this module are image paths ("/etc/passwd", "a/b"): relative
ones are taken from the tree's root. Every error is an OSError or a
`Refused` carrying the image path.

This module resolves paths (`Tree`); acting on entries (`set_metadata`,
`set_fd_metadata`) and walking or removing a tree (`walk`, `remove`,
`empty_dir`, `DirStack`) live beside it in .entries, and are used from
here. The package imports the standard library only: the sandbox helper
loads it as a sibling of its own file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
# The sandbox helper loads this module on every RUN: typing (which imports
# re and enum) or collections.abc would be most of its import time, for
# annotations only. Type checkers take a TYPE_CHECKING of one's own.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

from .entries import _DIR_FLAGS, _PATH_FLAGS, DirStack, empty_dir, remove, set_fd_metadata, set_metadata, walk

__all__ = ["DirStack", "Refused", "Tree", "check_name", "empty_dir", "remove", "set_fd_metadata",
           "set_metadata", "walk"]

_SYS_OPENAT2 = 437  # x86_64 and every other arch with the generic table
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_IN_ROOT = 0x10
_MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Refused(OSError):
    """A path the tree cannot hold as asked: a non-directory in the way of a
    directory, or a name that is not a plain name."""

    def __init__(self, path: str, why: str):
        super().__init__(errno.ENOTDIR, why, path)
        self.path = path
        self.why = why

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


def _openat2(dir_fd: int, path: bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
    # openat2 refuses a mode without O_CREAT or O_TMPFILE (open(2) ignores it).
    takes_mode = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE
    how = _OpenHow(flags | os.O_CLOEXEC, mode if takes_mode else 0,
                   _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS | resolve)
    # EAGAIN: a rename elsewhere in the tree raced the walk; the kernel asks
    # for a retry rather than risk a wrong answer.
    for _ in range(64):
        fd = _libc.syscall(_SYS_OPENAT2, dir_fd, path, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, os.strerror(err), os.fsdecode(path))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fsdecode(path))


def _probe_openat2() -> bool:
    root = os.open("/", _DIR_FLAGS)
    try:
        os.close(_openat2(root, b".", _DIR_FLAGS))
    except OSError:
        return False
    finally:
        os.close(root)
    return True


# Tests turn this off to run the fallback walk on a kernel that has openat2.
HAVE_OPENAT2 = _probe_openat2()


def _parts(path: str | bytes) -> list[bytes]:
    raw = os.fsencode(path)
    return [part for part in raw.split(b"/") if part not in (b"", b".")]


def _names_a_directory(target: bytes) -> bool:
    """A symlink target whose last component is empty or `.` (`d/`, `d/.`):
    only a directory can be what it names."""
    return target.rsplit(b"/", 1)[-1] in (b"", b".")


def _image_path(parts: Iterable[bytes]) -> str:
    return "/" + os.fsdecode(b"/".join(parts))


class Tree:
    """A host directory standing for `/` of a tree untrusted input shaped.

    Holds one directory fd for its life: use it as a context manager. The
    directory itself is trusted (pybuild made it); what is inside is not.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.fd = os.open(self.path, _DIR_FLAGS | os.O_NOFOLLOW)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- resolving

    def open(self, path: str | bytes, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
        """os.open of `path` resolved inside the tree. A final symlink is
        followed (inside the tree) unless `flags` has O_NOFOLLOW, as open(2)
        does; with O_CREAT prefer `parent()` and an O_EXCL open there."""
        parts = _parts(path)
        if not parts:
            return os.open(".", flags | os.O_CLOEXEC, dir_fd=self.fd)
        if HAVE_OPENAT2:
            return _openat2(self.fd, b"/".join(parts), flags, mode)
        for _ in range(_MAX_SYMLINKS):
            if parts[-1] == b"..":
                # Never opened by name: `..` of the tree's root is outside it.
                fd = self._walk(parts)
                try:
                    return os.open(".", flags | os.O_CLOEXEC, dir_fd=fd)
                finally:
                    os.close(fd)
            parent_fd, name = self._walk_parent(parts)
            try:
                target = None if flags & os.O_NOFOLLOW else self._follow_final(parent_fd, name)
                if target is None:
                    return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent_fd)
            finally:
                os.close(parent_fd)
            parts = _parts(target)
            if _names_a_directory(target):
                # `f/.` or `f/`: the kernel wants a directory there (ENOTDIR)
                flags |= os.O_DIRECTORY
            if not parts:
                return os.open(".", flags | os.O_CLOEXEC, dir_fd=self.fd)
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(path))

    def open_dir(self, path: str | bytes) -> int:
        """An fd (O_RDONLY) of the directory `path`; ENOENT/ENOTDIR as open(2)."""
        return self.open(path, _DIR_FLAGS)

    def parent(self, path: str | bytes) -> tuple[int, bytes]:
        """(fd of the directory holding `path`'s final name, that name). The
        parent is resolved inside the tree, the name is not looked at: act on
        it with dir_fd= and follow_symlinks=False. The caller closes the fd.
        The tree's root has no parent: Refused."""
        parts = _parts(path)
        if not parts:
            raise Refused("/", "the root has no parent")
        name = parts[-1]
        if name == b"..":
            raise Refused(_image_path(parts), "'..' as a final name")
        return self.open_dir(b"/".join(parts[:-1]) or b"."), name

    def make_parent(self, path: str | bytes, *, mode: int = 0o755, owner: tuple[int, int] | None = None
                    ) -> tuple[int, bytes]:
        """As `parent()`, creating missing directories on the way (mkdir -p
        inside the tree, each new one `mode` and `owner`)."""
        parts = _parts(path)
        if not parts:
            raise Refused("/", "the root has no parent")
        if parts[-1] == b"..":
            raise Refused(_image_path(parts), "'..' as a final name")
        return self.make_dirs(b"/".join(parts[:-1]), mode=mode, owner=owner), parts[-1]

    def make_target_parent(self, path: str | bytes, *, mode: int = 0o755, owner: tuple[int, int] | None = None
                           ) -> tuple[int, bytes]:
        """As `make_parent`, with a final symlink followed too (inside the
        tree): the name returned is where `path` leads (`join`), absent or
        not a symlink. A dangling symlink leads to what it points at, as
        continuity's fs.RootPath resolves a COPY destination. Refused when
        that is the root."""
        return self.make_parent(self.join(path), mode=mode, owner=owner)

    def make_dirs(self, path: str | bytes, *, mode: int = 0o755, owner: tuple[int, int] | None = None) -> int:
        """An fd of the directory `path`, made with its missing parents.
        A dangling symlink on the way is followed (inside the tree) and its
        target made, as mkdir -p through it would; a non-directory in the way
        is Refused. Iterative, one fd held at a time: `path` may be thousands
        of directories deep."""
        parts = _parts(path)
        followed = 0
        while True:
            try:
                return self.open_dir(b"/".join(parts) or b".")
            except FileNotFoundError:
                pass
            except NotADirectoryError:
                raise Refused(_image_path(parts), "not a directory") from None
            fd, start = self._open_deepest_dir(parts)
            try:
                for depth in range(start, len(parts)):
                    name = parts[depth]
                    if name == b"..":
                        # Below a directory just made: it exists now.
                        parent = self.open_dir(b"/".join(parts[:depth + 1]))
                    else:
                        parent = self._make_child_dir(fd, name, parts[:depth + 1], mode, owner)
                    if parent is None:
                        # A dangling symlink: make what it points at, then the rest below it.
                        followed += 1
                        if followed > _MAX_SYMLINKS:
                            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(path))
                        parts = _parts(self._follow_final(fd, name)) + parts[depth + 1:]
                        break
                    os.close(fd)
                    fd = parent
                else:
                    made, fd = fd, -1
                    return made
            finally:
                if fd >= 0:
                    os.close(fd)

    def _open_deepest_dir(self, parts: list[bytes]) -> tuple[int, int]:
        """(fd, n): the longest prefix parts[:n] that opens as a directory,
        parts itself not. Found by bisection: a prefix of one that resolves
        resolves too, and one through a missing name fails likewise."""
        low, high = 0, len(parts) - 1
        while low < high:
            middle = (low + high + 1) // 2
            try:
                os.close(self.open_dir(b"/".join(parts[:middle])))
            except FileNotFoundError:
                high = middle - 1
            except NotADirectoryError:
                raise Refused(_image_path(parts[:middle]), "not a directory") from None
            else:
                low = middle
        try:
            return self.open_dir(b"/".join(parts[:low]) or b"."), low
        except NotADirectoryError:
            raise Refused(_image_path(parts[:low]), "not a directory") from None

    @staticmethod
    def _make_child_dir(parent_fd: int, name: bytes, parts: list[bytes], mode: int,
                        owner: tuple[int, int] | None) -> int | None:
        """An fd of the new directory `name` in `parent_fd`; None when a
        symlink holds the name."""
        try:
            os.mkdir(name, mode, dir_fd=parent_fd)
        except FileExistsError:
            st = os.lstat(name, dir_fd=parent_fd)
            if stat.S_ISLNK(st.st_mode):
                return None
            if not stat.S_ISDIR(st.st_mode):
                raise Refused(_image_path(parts), "not a directory") from None
            # made meanwhile by someone else: as mkdir -p, use it as it is
            return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            # mkdir's mode went through the umask.
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def lstat(self, path: str | bytes) -> os.stat_result | None:
        """lstat of `path` (parents resolved inside the tree), None if absent."""
        parts = _parts(path)
        if not parts:
            return os.fstat(self.fd)
        try:
            parent_fd, name = self.parent(b"/".join(parts))
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.lstat(name, dir_fd=parent_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            os.close(parent_fd)

    def join(self, path: str | bytes) -> str:
        """The image path `path` names in the tree, as continuity's
        fs.RootPath (securejoin) has it: every symlink on the way followed
        inside the tree, a dangling one to what it points at; components
        past a missing one, or past a non-directory, kept as written (with
        their '..' applied). Where a mount point or a file for `path` would
        be made; nothing is opened but directories, with O_NOFOLLOW."""
        pending = _parts(path)
        done: list[bytes] = []
        # The directories done[:i] for i < len(dirs); done outruns dirs past
        # a missing component or a non-directory. A DirStack: a path may be
        # thousands of directories deep.
        dirs = DirStack(os.dup(self.fd))
        followed = 0
        try:
            while pending:
                name = pending.pop(0)
                if name == b"..":
                    if done:
                        done.pop()
                    if len(dirs) > len(done) + 1:
                        dirs.truncate(len(done) + 1)
                    continue
                if len(dirs) < len(done) + 1:
                    done.append(name)
                    continue
                try:
                    st = os.lstat(name, dir_fd=dirs.fd)
                except (FileNotFoundError, NotADirectoryError):
                    done.append(name)
                    continue
                if stat.S_ISLNK(st.st_mode):
                    followed += 1
                    if followed > _MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(path))
                    target = os.readlink(name, dir_fd=dirs.fd)
                    if target.startswith(b"/"):
                        done.clear()
                        dirs.truncate(1)
                    pending[:0] = _parts(target)
                    continue
                done.append(name)
                if stat.S_ISDIR(st.st_mode):
                    dirs.push(os.open(name, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=dirs.fd))
            return _image_path(done)
        finally:
            dirs.close()

    def open_exact(self, path: str | bytes, flags: int = os.O_PATH) -> int:
        """os.open of `path` only as it stands: ELOOP if any component, the
        final one too, is a symlink; '..' is Refused. For checking that what
        was made at a path is still there, not for following the image."""
        parts = _parts(path)
        if b".." in parts:
            raise Refused(_image_path(parts), "'..' in an exact path")
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        if not parts:
            fd = os.open(".", flags, dir_fd=self.fd)
        elif HAVE_OPENAT2:
            fd = _openat2(self.fd, b"/".join(parts), flags, resolve=_RESOLVE_NO_SYMLINKS)
        else:
            parent = os.dup(self.fd)
            try:
                for name in parts[:-1]:
                    try:
                        fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
                    except NotADirectoryError:
                        if stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode):
                            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), _image_path(parts)) from None
                        raise
                    os.close(parent)
                    parent = fd
                fd = os.open(parts[-1], flags, dir_fd=parent)
            finally:
                os.close(parent)
        # O_PATH|O_NOFOLLOW opens a final symlink itself rather than failing
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), _image_path(parts))
        return fd

    def image_path_of(self, fd: int) -> str:
        """The image path of an fd opened inside this tree."""
        host = os.readlink(f"/proc/self/fd/{fd}")
        rel = os.path.relpath(host, os.readlink(f"/proc/self/fd/{self.fd}"))
        return "/" if rel == "." else "/" + rel

    # -- the fallback walk (no openat2)

    def _walk_parent(self, parts: list[bytes]) -> tuple[int, bytes]:
        """(fd of the resolved parent of parts[-1], parts[-1]), without openat2."""
        return self._walk(parts[:-1]), parts[-1]

    def _walk(self, parts: list[bytes]) -> int:
        dirs = DirStack(os.dup(self.fd))
        pending = list(parts)
        followed = 0
        try:
            while pending:
                name = pending.pop(0)
                if name in (b"", b"."):
                    continue
                if name == b"..":
                    if len(dirs) > 1:
                        dirs.truncate(len(dirs) - 1)
                    continue
                try:
                    fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dirs.fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.lstat(name, dir_fd=dirs.fd)
                    if not stat.S_ISLNK(st.st_mode):
                        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR),
                                                 os.fsdecode(name)) from None
                    followed += 1
                    if followed > _MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), os.fsdecode(name)) from None
                    target = os.readlink(name, dir_fd=dirs.fd)
                    if target.startswith(b"/"):
                        dirs.truncate(1)
                    pending[:0] = _parts(target)
                    continue
                dirs.push(fd)
            return dirs.pop()[0]
        finally:
            dirs.close()

    def _follow_final(self, parent_fd: int, name: bytes) -> bytes | None:
        """The image path a final symlink `name` points at, None when it is
        not a symlink."""
        try:
            st = os.lstat(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return None
        if not stat.S_ISLNK(st.st_mode):
            return None
        target = os.readlink(name, dir_fd=parent_fd)
        if target.startswith(b"/"):
            return target
        return os.fsencode(self.image_path_of(parent_fd)) + b"/" + target


def check_name(name: str | bytes) -> bytes:
    """`name` as one plain directory entry name: not empty, `.`, `..`, and
    without `/` or NUL; Refused otherwise."""
    raw = os.fsencode(name)
    if raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw:
        raise Refused(os.fsdecode(raw), "not a plain file name")
    return raw
