"""Confined extraction of a tar stream into a directory: the one mechanism
under ADD's local archives (builder/ops/archive.py) and base layers
(runtime/layer.py), which differ only in policy (subclasses of `Unpacker`).

The archive is untrusted and may plant symlinks (`s -> /etc/shadow`,
`d -> ../../..`) for later members to go through. Every operation is made
relative to directory fds (runtime.confine), and no metadata or data ever
goes through a name the archive planted:
- a member's parent directory is opened as an fd, as the policy says
  (ADD: symlinks followed as if the destination were `/`; layers: refused),
  and the member's own name is then acted on in that fd: whatever holds the
  name is removed (rm -rf, never following), the new entry is created with
  O_EXCL/O_NOFOLLOW;
- a file's metadata goes through the fd it was written with, a directory's
  through its own fd, other entries' through confine.set_metadata (a
  symlink gets no mode);
- a directory's times are the only thing deferred (writing its entries
  changes them): they are set at the end through an fd re-opened and
  checked to be the very inode extracted (st_dev, st_ino). A directory
  removed later in the archive has its record dropped, so one replaced by
  a symlink (to a host directory, say) receives nothing;
- a hard link names an earlier non-directory member of the same archive,
  and must still be the inode that member made. Its header sets that
  inode's metadata, as docker and containerd do, and never through a
  symlink: a link to a symlink member links the symlink itself, which gets
  the owner, no mode and no times.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile

from runtime import confine
from runtime.userns import in_user_namespace

Parts = tuple[bytes, ...]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_MAX_OPEN_DIRS = 256
_REGULAR_TYPES = frozenset(tarfile.REGULAR_TYPES)  # GNU sparse and contiguous files included
_MADE_TYPES = _REGULAR_TYPES | {tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                tarfile.BLKTYPE, tarfile.FIFOTYPE}


class Unpacker:
    """Extracts one tar stream into `tree`. Subclasses give the policy:
    `member_parts`, `open_parent`, `refuse`, and the hooks below. `chown`
    overrides every member's owner (a context archive unpacked by its user)."""

    # Names starting with it go to `whiteout()` (a layer's `.wh.` entries).
    whiteout_prefix: bytes | None = None
    keeps_names = False

    def __init__(self, tree: confine.Tree, *, chown: tuple[int, int] | None = None):
        self.tree = tree
        self.chown = chown
        # Parent directories by member path, with the real image path of
        # each (no symlink in it); `open_parent` may add the ones it opens
        # on the way. Valid until a directory or symlink is removed: then
        # any cached resolution may be stale.
        self.open_dirs: dict[Parts, tuple[int, bytes]] = {}
        self._retired: list[int] = []  # closed once the current member is done
        self._inodes: dict[Parts, tuple[int, int]] = {}  # non-directory members -> their inode
        # Every member name so far, for a policy that sets `keeps_names`
        # (what its opaque whiteout spares); not kept for a layer's
        # hundreds of thousands of names, which no one reads.
        self.unpacked: set[Parts] | None = set() if self.keeps_names else None
        self._dir_times: dict[tuple[int, int], tuple[bytes, int]] = {}  # inode -> (real path, mtime)

    # -- policy

    def member_parts(self, name: str) -> Parts:
        """The components of a member name or hard link target, () for the
        destination itself; raises for a name the policy refuses."""
        raise NotImplementedError

    def open_parent(self, parts: Parts, member: tarfile.TarInfo) -> tuple[int, bytes]:
        """(fd, real image path) of the directory `parts`, made if missing.
        Called on a cache miss; may call `cached_dir` for shorter prefixes."""
        raise NotImplementedError

    def refuse(self, member_name: str, why: str) -> Exception:
        raise NotImplementedError

    def root_member(self, member: tarfile.TarInfo) -> None:
        """A member naming the destination itself."""

    def whiteout(self, member: tarfile.TarInfo, parent_fd: int, parent_real: bytes, parts: Parts) -> None:
        """A member named with `whiteout_prefix`."""
        raise NotImplementedError

    def unsupported(self, member: tarfile.TarInfo) -> None:
        """An entry type this module does not make."""
        raise self.refuse(member.name, f"unsupported entry type {member.type!r}")

    def xattrs(self, member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        """The xattrs to set, from the member's PAX records (none by default)."""
        return []

    # -- the walk

    def run(self, tar: tarfile.TarFile) -> None:
        try:
            while (member := tar.next()) is not None:
                try:
                    self._member(tar, member)
                except UnreadableArchive:
                    raise
                except OSError as exc:
                    # What the filesystem refused (a name too long, a file
                    # too large, an xattr): one error naming the member.
                    raise self.refuse(member.name, exc.strerror or str(exc)) from exc
                finally:
                    tar.members.clear()  # stream mode would keep every TarInfo
                    if self._retired:
                        self._close_retired()
            self._retire_dirs()
            self._set_dir_times()
        finally:
            self._retire_dirs()
            self._close_retired()

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self.member_parts(member.name)
        if not parts:
            self.root_member(member)
            return
        if self.unpacked is not None:
            self.unpacked.add(parts)
        if len(self.open_dirs) > _MAX_OPEN_DIRS:
            self._retire_dirs()
        parent = parts[:-1]
        found = self.open_dirs.get(parent) if parent else None
        parent_fd, parent_real = found if found is not None else self.cached_dir(parent, member)
        if self.whiteout_prefix is not None and parts[-1].startswith(self.whiteout_prefix):
            self.whiteout(member, parent_fd, parent_real, parts)
            return
        kind = member.type
        if kind not in _MADE_TYPES:
            self.unsupported(member)
            return
        if kind == tarfile.SYMTYPE and not member.linkname:  # symlink(2) refuses it with ENOENT
            raise self.refuse(member.name, "symlink with an empty target")
        link_target = self.member_parts(member.linkname) if kind == tarfile.LNKTYPE else None
        name = parts[-1]
        if kind == tarfile.DIRTYPE:
            self._inodes.pop(parts, None)
            self._directory(member, parts, parent_fd, parent_real)
            return
        uid, gid = self._owner(member)
        xattrs = self.xattrs(member) if member.pax_headers else ()
        mtime = _mtime_ns(member)
        if kind in _REGULAR_TYPES:
            fd = self._replacing(parent_fd, parent_real, name,
                                 lambda: os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent_fd))
            try:
                self._write(tar, member, fd)
                confine.set_fd_metadata(fd, uid=uid, gid=gid, mode=member.mode, mtime_ns=mtime, xattrs=xattrs,
                                        skip_unsupported_xattrs=True)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        elif kind == tarfile.LNKTYPE:
            # Whatever holds the name goes first: a link may name itself.
            self.clear(parent_fd, parent_real, name)
            st = self._hardlink(member, link_target, parent_fd, name)
            # The link's own header sets the inode's metadata: no mode for a
            # symlink (confine.set_metadata never follows it), nor times,
            # which docker's extraction gives a link only when its target
            # is no symlink (BuildKit 0.13 keeps the symlink's own).
            linked_symlink = stat.S_ISLNK(st.st_mode)
            confine.set_metadata(parent_fd, name, uid=uid, gid=gid, mode=member.mode,
                                 mtime_ns=None if linked_symlink else mtime, xattrs=xattrs,
                                 skip_unsupported_xattrs=True)
        else:
            mode = None if kind == tarfile.SYMTYPE else member.mode
            if kind == tarfile.SYMTYPE:
                target = os.fsencode(member.linkname)
                self._replacing(parent_fd, parent_real, name, lambda: os.symlink(target, name, dir_fd=parent_fd))
            elif kind == tarfile.FIFOTYPE:
                self._replacing(parent_fd, parent_real, name, lambda: os.mkfifo(name, 0o600, dir_fd=parent_fd))
            else:
                node = (stat.S_IFCHR if kind == tarfile.CHRTYPE else stat.S_IFBLK) | 0o600
                device = os.makedev(member.devmajor, member.devminor)
                try:
                    self._replacing(parent_fd, parent_real, name,
                                    lambda: os.mknod(name, node, device, dir_fd=parent_fd))
                except PermissionError:
                    if not in_user_namespace():
                        raise
                    # A user namespace may make no device node: skipped, as
                    # containerd and containers/storage do there, but what
                    # held the name goes (a 0/0 node, which a user namespace
                    # may make, is a whiteout in a snapshot and through a view).
                    try:
                        self._replacing(parent_fd, parent_real, name,
                                        lambda: os.mknod(name, stat.S_IFCHR, 0, dir_fd=parent_fd))
                    except PermissionError:
                        # Through an overlay view, which makes no 0/0 node:
                        # _replacing removed what held the name, overlay
                        # hides the lowers' itself.
                        pass
                    return
            confine.set_metadata(parent_fd, name, uid=uid, gid=gid, mode=mode, mtime_ns=mtime, xattrs=xattrs,
                                 skip_unsupported_xattrs=True)
            st = os.lstat(name, dir_fd=parent_fd)
        self._inodes[parts] = (st.st_dev, st.st_ino)

    def _replacing(self, parent_fd: int, parent_real: bytes, name: bytes, make):
        """make() the new entry `name` (it creates with O_EXCL semantics).
        As docker and containerd do, a non-directory member replaces
        whatever holds its name, a directory tree included. Creating first
        spares an lstat per member in the usual case: nothing is there."""
        try:
            return make()
        except FileExistsError:
            pass
        self.remove(parent_fd, parent_real, name, os.lstat(name, dir_fd=parent_fd))
        return make()

    def _directory(self, member, parts: Parts, parent_fd: int, parent_real: bytes) -> None:
        name = parts[-1]
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            existing = os.lstat(name, dir_fd=parent_fd)
            if not stat.S_ISDIR(existing.st_mode):  # a directory is merged with, anything else replaced
                self.remove(parent_fd, parent_real, name, existing)
                os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        real = _join(parent_real, name)
        try:
            uid, gid = self._owner(member)
            confine.set_fd_metadata(fd, uid=uid, gid=gid, mode=member.mode, xattrs=self.xattrs(member),
                                    skip_unsupported_xattrs=True)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._dir_times[(st.st_dev, st.st_ino)] = (real, _mtime_ns(member))
        if parts in self.open_dirs:
            os.close(fd)
        else:
            # Its entries usually follow: keep the fd for them.
            self.open_dirs[parts] = (fd, real)

    def set_root_metadata(self, member: tarfile.TarInfo) -> None:
        """The destination's own owner, mode and xattrs from `member`, and its
        times at the end."""
        uid, gid = self._owner(member)
        confine.set_fd_metadata(self.tree.fd, uid=uid, gid=gid, mode=member.mode, xattrs=self.xattrs(member),
                                skip_unsupported_xattrs=True)
        st = os.fstat(self.tree.fd)
        self._dir_times[(st.st_dev, st.st_ino)] = (b"/", _mtime_ns(member))

    def _owner(self, member: tarfile.TarInfo) -> tuple[int, int]:
        return self.chown if self.chown is not None else (member.uid, member.gid)

    def _hardlink(self, member, target: Parts, parent_fd: int, name: bytes) -> os.stat_result:
        """Link `name` to the earlier member `target` (linkat: a symlink is
        linked itself, never followed)."""
        found = self._earlier_member(target)
        if found is None:
            raise self.refuse(member.name, f"hard link to {member.linkname!r}, not an earlier entry")
        source_fd, source_name, st = found
        try:
            os.link(source_name, name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(source_fd)
        return st

    def _earlier_member(self, target: Parts) -> tuple[int, bytes, os.stat_result] | None:
        """(its parent's fd, its name, its lstat) when `target` names an
        earlier non-directory member that still holds the inode it made."""
        expected = self._inodes.get(target) if target else None
        if expected is None:
            return None
        try:
            fd, name = self.tree.parent(b"/".join(target))
        except OSError:
            return None  # a directory on its way was replaced since
        st = _lstat(fd, name)
        if st is None or (st.st_dev, st.st_ino) != expected:
            os.close(fd)
            return None
        return fd, name, st

    def _write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
        source = tar.extractfile(member)
        if member.sparse is not None:
            self._write_sparse(source, member, fd)
            return
        remaining = member.size
        while remaining > 0:
            chunk = _read(source.read, min(remaining, _CHUNK))
            if not chunk:
                raise self.refuse(member.name, "archive ends inside the file")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            remaining -= len(chunk)

    def _write_sparse(self, source, member: tarfile.TarInfo, fd: int) -> None:
        """A GNU/PAX sparse member: only its data regions are written, the
        holes stay holes. Why: a 1 TiB sparse file is a 10 KiB archive, and
        writing its zeros would fill the disk under the root."""
        for offset, length in member.sparse:
            if offset < 0 or length < 0 or offset + length > member.size:
                raise self.refuse(member.name, "sparse map beyond the file's size")
            if not length:
                continue
            # The unbuffered reader: tarfile's buffered one asks the stream
            # whether it can seek. Forward only: the map is in archive order.
            _read(source.raw.seek, offset)
            while length > 0:
                chunk = _read(source.raw.read, min(length, _CHUNK))
                if not chunk:
                    raise self.refuse(member.name, "archive ends inside the file")
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
                length -= len(chunk)
        os.ftruncate(fd, member.size)

    # -- what subclasses build on

    def open_below(self, parts: Parts, member: tarfile.TarInfo, open_child) -> tuple[int, bytes]:
        """(fd, real image path) of the member directory `parts`, from the
        deepest one cached, one component at a time: open_child(dir_fd,
        name, member, path so far) returns the next fd. Iterative, and the
        directories passed are cached only while half the cache is free,
        the deepest first (the next members are most likely beside this
        one); the others are closed: a member may be thousands of
        directories deep, and one fd per level would run out of fds."""
        start = len(parts) - 1
        while start and parts[:start] not in self.open_dirs:
            start -= 1
        fd, real = self.cached_dir(parts[:start], member)
        room = max(0, _MAX_OPEN_DIRS // 2 - len(self.open_dirs))
        for depth in range(start, len(parts)):
            try:
                child = open_child(fd, parts[depth], member, parts[:depth + 1])
            finally:
                if depth > start:  # an fd opened here, not the cache's
                    if len(parts) - depth <= room:
                        self.open_dirs[parts[:depth]] = (fd, real)
                    else:
                        os.close(fd)
            fd, real = child, _join(real, parts[depth])
        return fd, real

    def cached_dir(self, parts: Parts, member: tarfile.TarInfo) -> tuple[int, bytes]:
        """(fd, real image path) of the member directory `parts`; the
        destination for ()."""
        if not parts:
            return self.tree.fd, b"/"
        found = self.open_dirs.get(parts)
        if found is None:
            found = self.open_dirs[parts] = self.open_parent(parts, member)
        return found

    def remove(self, parent_fd: int, parent_real: bytes, name: bytes, existing: os.stat_result) -> None:
        """rm -rf of `name`, never following it, and forget what it held."""
        if stat.S_ISDIR(existing.st_mode) or stat.S_ISLNK(existing.st_mode):
            self._retire_dirs()
        if not stat.S_ISDIR(existing.st_mode):
            os.unlink(name, dir_fd=parent_fd)
            return
        gone = _join(parent_real, name)
        self._dir_times = {inode: entry for inode, entry in self._dir_times.items()
                           if not _is_within(entry[0], gone)}
        confine.remove(parent_fd, name)

    def clear(self, parent_fd: int, parent_real: bytes, name: bytes) -> None:
        """`remove` whatever holds `name`, if anything does."""
        existing = _lstat(parent_fd, name)
        if existing is not None:
            self.remove(parent_fd, parent_real, name, existing)

    def _retire_dirs(self) -> None:
        # The caller may still hold one of these fds for the current member.
        self._retired.extend(fd for fd, _ in self.open_dirs.values())
        self.open_dirs.clear()

    def _close_retired(self) -> None:
        while self._retired:
            os.close(self._retired.pop())

    def _set_dir_times(self) -> None:
        # Re-opened inside the tree by the path the directory had; only the
        # very inode extracted gets its times (a record whose directory was
        # removed is gone already: this is the second guard).
        for (dev, ino), (real, mtime) in self._dir_times.items():
            try:
                fd = self.tree.open(real, _DIR_FLAGS)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # not there as extracted: nothing to set
                # ENAMETOOLONG: deeper than a path can name, where
                # containerd's extraction fails too
                raise self.refuse(os.fsdecode(real.lstrip(b"/")), exc.strerror or str(exc)) from exc
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)


class UnreadableArchive(OSError):
    """The archive's own bytes could not be read (I/O, decompression): an
    error of the stream, for the caller to report as before, not of a
    member."""


def _read(call, argument):
    try:
        return call(argument)
    except OSError as exc:
        raise UnreadableArchive(*exc.args) from exc


def _lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent.endswith(b"/") else parent + b"/" + name


def _is_within(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top + b"/")


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(member.mtime * 1_000_000_000)
