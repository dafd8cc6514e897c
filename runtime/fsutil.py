"""Filesystem helpers shared by the snapshotters and the file ops.

Everything here works on a host directory that stands for an image's root
filesystem, so symlinks inside it are never allowed to point the host's way
out: they are resolved as if the directory were `/`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from runtime import confine
from runtime.errors import RuntimeFailure

_COPY_CHUNK = 1 << 20


class SymlinkLoop(RuntimeFailure):
    def __init__(self, path: str):
        self.path = path
        super().__init__(f"resolve {path}: too many levels of symbolic links")


def resolve_in_root(root: Path, path: str, *, follow_final: bool = True) -> Path:
    """The host path of the image path `path` inside the rootfs `root`, for
    code that hands a path on (a bind mount source, a context entry to hash).

    Symlinks are followed as the kernel would inside a container whose `/`
    is `root` (runtime.confine.Tree.join: absolute targets and `..` stay
    inside, a dangling link leads to what it points at); missing components
    are kept literally, so the result may not exist yet. With
    follow_final=False a symlink in the last component is returned itself.
    """
    root = Path(root)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    final = None
    if not follow_final and parts and parts[-1] != "..":
        final = parts.pop()
    try:
        # The root itself is pybuild's to name (a context given as a
        # symlink, say); what is inside it is not.
        with confine.Tree(os.path.realpath(root)) as tree:
            inside = tree.join("/".join(parts))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkLoop(path) from None
        raise
    host = root.joinpath(inside.lstrip("/"))
    return host / final if final is not None else host


def remove_tree(path: Path | str, *, ignore_errors: bool = False) -> None:
    """rm -rf: symlinks are removed, never followed; directories without
    write or search permission (overlay's work/work is mode 000, layers may
    carry 0555 dirs) are opened up first when that is what stops removal.
    Iterative through directory fds (runtime.confine.remove): a tree of any
    depth or path length goes, as rm -rf removes it. `ignore_errors`: an
    OSError leaves the rest where it is, for best-effort cleanup."""
    head, name = os.path.split(os.fspath(path).rstrip("/"))
    if not name:
        raise ValueError(f"remove_tree: no name to remove in {os.fspath(path)!r}")
    try:
        try:
            parent = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing there to remove
        try:
            confine.remove(parent, name)
        finally:
            os.close(parent)
    except OSError:
        if not ignore_errors:
            raise


def copy_data(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy file contents between two fds, in the kernel when it can (reflinks
    on btrfs/xfs), otherwise through a 1 MiB buffer."""
    remaining = size
    try:
        while remaining > 0:
            done = os.copy_file_range(src_fd, dst_fd, min(remaining, 1 << 30))
            if done == 0:
                break
            remaining -= done
        # A file that grew since stat: copy the rest too.
        while os.copy_file_range(src_fd, dst_fd, 1 << 30) > 0:
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(src_fd, 0, os.SEEK_SET)
    os.lseek(dst_fd, 0, os.SEEK_SET)
    os.ftruncate(dst_fd, 0)
    while chunk := os.read(src_fd, _COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]


def read_xattrs(path: str | bytes | int, *, skip_prefix: tuple[str, ...] = ()) -> list[tuple[str, bytes]]:
    """All extended attributes of `path` (not following a final symlink) or
    of an open fd, sorted by name, minus those starting with one of
    `skip_prefix`."""
    # An fd takes no follow_symlinks (it is the file itself).
    follow = {} if isinstance(path, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(path, **follow)
    except OSError as exc:
        # Filesystems without xattr support simply have none.
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    result = []
    for name in sorted(names):
        if name.startswith(skip_prefix):
            continue
        try:
            result.append((name, os.getxattr(path, name, **follow)))
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed meanwhile
                raise
    return result


def copy_file(src, dst, size: int) -> os.stat_result:
    """A new regular file `dst` (0600, the caller sets metadata) with the data
    of `src`; neither is followed if it is a symlink. Returns the fstat of
    `src` taken after the copy, so a caller can tell whether the bytes it
    copied are the ones it saw (and hashed) before."""
    src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            copy_data(src_fd, dst_fd, size)
        finally:
            os.close(dst_fd)
        return os.fstat(src_fd)
    finally:
        os.close(src_fd)


def copy_node(src: str, dst: str, st: os.stat_result, *, skip_xattrs: tuple[str, ...] = ()) -> None:
    """Create `dst` as a copy of the non-directory `src` (file data, symlink,
    device, fifo) with owner, mode, xattrs and times. `dst` must not exist."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        copy_file(src, dst, st.st_size)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst, 0o600)
    elif stat.S_ISSOCK(mode):
        os.mknod(dst, stat.S_IFSOCK | 0o600)
    else:
        raise RuntimeFailure(f"copy {src}: unsupported file type {stat.S_IFMT(mode):o}")
    copy_metadata(src, dst, st, skip_xattrs=skip_xattrs)


def copy_metadata(src: str, dst: str, st: os.stat_result, *, skip_xattrs: tuple[str, ...] = ()) -> None:
    """Owner, mode, xattrs, then times, in the order that keeps each: chown
    clears setuid bits and security.capability, and every change but utime
    itself bumps nothing we keep but ctime."""
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    is_link = stat.S_ISLNK(st.st_mode)
    if not is_link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name, value in read_xattrs(src, skip_prefix=skip_xattrs):
        os.setxattr(dst, name, value, follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
