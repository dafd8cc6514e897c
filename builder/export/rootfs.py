"""`type=local` and `type=tar` outputs: the final root filesystem itself.

`type=local` writes the files as buildx's client does (fsutil's receiver
with Merge): into the directory `dest` (made when missing), over what is
there, leaving other entries alone; owned by the user who ran the build.
Unlike it, and on purpose:

- A name already in the destination is never followed. A symlink (or file)
  where the image has a directory is removed and the directory made; one
  where the image has a file is replaced by a rename, as `tar
  --unlink-first` would: a destination in a checkout, or one a previous
  export filled with the image's symlinks, cannot steer a write out of it.
  Every entry is made relative to its parent's fd, metadata set through fds.
- pybuild runs as root (buildx's client runs as the user): setuid and setgid
  bits, device nodes and the `security.capability`, `trusted.*` and other
  non-`user.*` xattrs are left out, and everything is owned by the invoking
  user (`SUDO_UID`/`SUDO_GID` under sudo, else pybuild's own uid and gid).
  `preserve-special=true` writes the image as it is: its owners, modes,
  device nodes and xattrs (a root filesystem for a chroot, as `tar -xp`).

`type=tar` writes the tar next to `dest` and renames it over `dest`: a
symlink at `dest` is replaced, never written through (buildx's os.Create
would follow it).

The path given as `dest` itself is the user's: its parents, and `dest` when
it is a symlink to a directory, are followed, as buildx and `tar -C` do.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

from builder.errors import PybuildError
from builder.export import scratch
from runtime import layer as layer_tar
from runtime.confine import DirStack, Tree, remove, set_fd_metadata, set_metadata
from runtime.fsutil import copy_data, read_xattrs

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID


class ExportError(PybuildError):
    """A local or tar destination that cannot be written as asked."""


def export_rootfs(snapshots, chain, dest: Path, *, as_tar: bool, preserve_special: bool = False) -> None:
    """Write the merged filesystem of `chain` to dest: a tar file (`-` for
    stdout) or a directory. The tar is written next to dest and renamed, so
    dest is never half-written."""
    with snapshots.mount(tuple(chain), None) as merged:
        if as_tar:
            _write_tar(Path(merged), dest)
        else:
            owner = None if preserve_special else invoking_owner()
            write_local(Path(merged), dest, owner=owner, preserve_special=preserve_special)


def _write_tar(merged: Path, dest: Path) -> None:
    if str(dest) == "-":
        layer_tar.write_layer(merged, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    if dest.is_dir() and not dest.is_symlink():
        raise ExportError(f"destination file {dest} is a directory")
    owner = invoking_owner()
    _make_dirs(dest.parent, owner)
    with scratch.exporting():
        _write_tar_beside(merged, dest, owner)


def _write_tar_beside(merged: Path, dest: Path, owner: tuple[int, int]) -> None:
    parent_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        scratch.remove_left_over(parent_fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        name, fd = scratch.make(lambda n: os.open(n, flags, 0o600, dir_fd=parent_fd), dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                layer_tar.write_layer(merged, out)
                # As buildx's client creates it: the user's, 0666 less the umask.
                os.fchown(out.fileno(), *owner)
                os.fchmod(out.fileno(), 0o666 & ~_umask())
            # replaces a symlink at dest, never follows it
            os.replace(name, dest.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            os.unlink(name, dir_fd=parent_fd)
            raise
    finally:
        os.close(parent_fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_dirs(path: Path, owner: tuple[int, int]) -> None:
    """mkdir -p of the user's destination path, what it makes owned by
    `owner` (who must be able to remove what the export wrote)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o755)
        except OSError as exc:
            raise ExportError(f"cannot create {new}: {exc.strerror}") from None
        os.chown(new, *owner, follow_symlinks=False)


def invoking_owner() -> tuple[int, int]:
    """Who a local export's files belong to: buildx's client writes them as
    itself; pybuild runs as root, mostly through sudo, so as the user sudo
    ran it for. A rootless pybuild is uid 0 of its own namespace, which is
    the user outside: SUDO_UID (of a `sudo -u user`) means nothing there."""
    from runtime.userns import rootless

    if os.getuid() == 0 and not rootless() and ("SUDO_UID" in os.environ or "SUDO_GID" in os.environ):
        return _sudo_id("SUDO_UID"), _sudo_id("SUDO_GID")
    return os.getuid(), os.getgid()


# uid_t is 32 bits and (uid_t)-1 means "leave the owner as it is" to
# chown(2): an owner of 4294967295 would silently keep root's files root's.
_MAX_ID = 4294967294


def _sudo_id(name: str) -> int:
    """A user or group id sudo set, refused unless it is one chown can give;
    the local and tar outputs check it before the build (builder.export.outputs),
    so nothing is written under an owner that cannot be."""
    text = os.environ.get(name, "")
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_ID:
        raise ExportError(f"{name}={text!r} is not a valid id (0 to {_MAX_ID}): cannot choose the owner of the output")
    return int(text)


def write_local(source: Path, dest: Path, *, owner: tuple[int, int] | None, preserve_special: bool) -> None:
    """Copy the tree `source` (pybuild's own mount of the image) into the
    directory `dest`. `owner` None keeps the image's owners."""
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"destination directory {dest} is a file")
    _make_dirs(dest, invoking_owner() if owner is None else owner)
    src_fd = os.open(source, _DIR_FLAGS)
    try:
        with scratch.exporting(), Tree(os.path.realpath(dest)) as tree:
            _LocalWriter(tree, owner, preserve_special).run(src_fd)
    finally:
        os.close(src_fd)


class _LocalWriter:
    def __init__(self, tree: Tree, owner: tuple[int, int] | None, preserve_special: bool):
        self.tree = tree
        self.owner = owner
        self.preserve_special = preserve_special
        self._links: dict[tuple[int, int], str] = {}  # source inode -> path of its first copy in dest

    def run(self, src_root: int) -> None:
        # Depth first on two DirStacks walked in step (an image's tree may
        # be deeper than Python's recursion, and than the fds a process
        # may hold): the source's directories, each with (path in dest,
        # names left to copy, its stat for the metadata), and the dest's.
        source = DirStack(os.dup(src_root), ("", _names(src_root), None))
        dest = DirStack(os.dup(self.tree.fd))
        try:
            scratch.remove_left_over(dest.fd)
            while source:
                path, names, st = source.data
                name = next(names, None)
                if name is None:
                    src_fd, _ = source.pop()
                    try:
                        dst_fd, _ = dest.pop()
                    except BaseException:
                        os.close(src_fd)
                        raise
                    try:
                        if st is not None:
                            self._set_fd_metadata(dst_fd, st, self._xattrs(src_fd))
                    finally:
                        os.close(src_fd)
                        os.close(dst_fd)
                    continue
                child_st = os.lstat(name, dir_fd=source.fd)
                child = f"{path}/{os.fsdecode(name)}"
                if stat.S_ISDIR(child_st.st_mode):
                    child_src = os.open(name, _DIR_FLAGS, dir_fd=source.fd)
                    try:
                        child_dst = self._dir(dest.fd, name)
                    except BaseException:
                        os.close(child_src)
                        raise
                    try:
                        source.push(child_src, (child, _names(child_src), child_st))
                    except BaseException:
                        os.close(child_dst)  # child_src is the stack's already
                        raise
                    dest.push(child_dst)
                    scratch.remove_left_over(child_dst)
                else:
                    self._node(source.fd, dest.fd, name, child_st, child)
        finally:
            source.close()
            dest.close()

    def _dir(self, dst_fd: int, name: bytes) -> int:
        """The directory `name` in dst_fd: an existing one is kept (merged
        into); anything else there, a symlink above all, is removed first."""
        try:
            os.mkdir(name, 0o700, dir_fd=dst_fd)
        except FileExistsError:
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=dst_fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            remove(dst_fd, name)
            os.mkdir(name, 0o700, dir_fd=dst_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dst_fd)

    def _node(self, src_fd: int, dst_fd: int, name: bytes, st: os.stat_result, path: str) -> None:
        """A non-directory, made under a temporary name and renamed over
        `name`: whatever was there (a symlink to a host file, say) is
        replaced, never written through."""
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return  # tar cannot hold sockets either
        if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and not self.preserve_special:
            return
        if stat.S_ISREG(mode):
            linked = self._link(st, dst_fd) if st.st_nlink > 1 else None
            if linked is not None:
                self._replace(dst_fd, linked, name)
                return
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                tmp, dst = scratch.make(lambda n: os.open(n, flags, 0o600, dir_fd=dst_fd), path)
                try:
                    copy_data(src, dst, st.st_size)
                    self._set_fd_metadata(dst, st, self._xattrs(src))
                except BaseException:
                    os.close(dst)
                    os.unlink(tmp, dir_fd=dst_fd)
                    raise
                os.close(dst)
            finally:
                os.close(src)
            if st.st_nlink > 1:
                self._links[(st.st_dev, st.st_ino)] = path
        else:
            if stat.S_ISLNK(mode):
                target = os.readlink(name, dir_fd=src_fd)
                tmp, _ = scratch.make(lambda n: os.symlink(target, n, dir_fd=dst_fd), path)
            elif stat.S_ISFIFO(mode):
                tmp, _ = scratch.make(lambda n: os.mkfifo(n, 0o600, dir_fd=dst_fd), path)
            else:
                tmp, _ = scratch.make(
                    lambda n: os.mknod(n, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_fd), path)
            try:
                self._set_name_metadata(dst_fd, tmp, st, self._name_xattrs(src_fd, name))
            except BaseException:
                os.unlink(tmp, dir_fd=dst_fd)
                raise
        self._replace(dst_fd, tmp, name)

    def _replace(self, dst_fd: int, tmp: str, name: bytes) -> None:
        tmp = os.fsencode(tmp)
        try:
            os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
            return
        except IsADirectoryError:
            pass  # the image has a file where the destination has a directory
        except BaseException:
            os.unlink(tmp, dir_fd=dst_fd)
            raise
        try:
            remove(dst_fd, name)
            os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dst_fd)
            raise

    def _link(self, st: os.stat_result, dst_fd: int) -> str | None:
        """A temporary name in dst_fd hard-linked to the first copy of the
        same inode; None when there is none to link to."""
        first = self._links.get((st.st_dev, st.st_ino))
        if first is None:
            return None
        parent_fd, first_name = self.tree.parent(first)
        try:
            tmp, _ = scratch.make(lambda n: os.link(first_name, n, src_dir_fd=parent_fd, dst_dir_fd=dst_fd,
                                                    follow_symlinks=False), first)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EMLINK):
                raise
            return None  # the first copy was replaced meanwhile, or too many links: copy
        finally:
            os.close(parent_fd)
        return tmp

    def _owner(self, st: os.stat_result) -> tuple[int, int]:
        return (st.st_uid, st.st_gid) if self.owner is None else self.owner

    def _mode(self, st: os.stat_result) -> int:
        mode = stat.S_IMODE(st.st_mode)
        return mode if self.preserve_special else mode & ~_SPECIAL_BITS

    def _keep_xattr(self, key: str) -> bool:
        if key.startswith("security.selinux"):
            return False  # the host's labels, not the image's
        return self.preserve_special or key.startswith("user.")

    def _xattrs(self, fd: int) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in read_xattrs(fd) if self._keep_xattr(k)]

    def _name_xattrs(self, dir_fd: int, name: bytes) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in read_xattrs(f"/proc/self/fd/{dir_fd}/".encode() + name) if self._keep_xattr(k)]

    def _set_fd_metadata(self, fd: int, st: os.stat_result, xattrs) -> None:
        uid, gid = self._owner(st)
        set_fd_metadata(fd, uid=uid, gid=gid, mode=self._mode(st), xattrs=xattrs, skip_refused_xattrs=True,
                        atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns)

    def _set_name_metadata(self, dir_fd: int, name: bytes, st: os.stat_result, xattrs) -> None:
        uid, gid = self._owner(st)
        is_link = stat.S_ISLNK(st.st_mode)
        set_metadata(dir_fd, name, uid=uid, gid=gid, mode=None if is_link else self._mode(st), xattrs=xattrs,
                     skip_refused_xattrs=True, atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns)


def _names(dir_fd: int):
    """The names in a directory, sorted (bytes: any name a layer holds)."""
    return iter(sorted(os.fsencode(n) for n in os.listdir(dir_fd)))
