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

_SYS_OPENAT2 = 437  # x86_64 and every other arch with the generic table
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_IN_ROOT = 0x10
_MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


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


# -- acting on a name relative to its parent's fd, never following it

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


def check_name(name: str | bytes) -> bytes:
    """`name` as one plain directory entry name: not empty, `.`, `..`, and
    without `/` or NUL; Refused otherwise."""
    raw = os.fsencode(name)
    if raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw:
        raise Refused(os.fsdecode(raw), "not a plain file name")
    return raw
