"""Snapshot (overlay upperdir form) <-> OCI layer tar.

write_layer produces the same bytes for the same files, every time: entries
in depth-first order with each directory's entries sorted by their bytes
(what `tar --sort=name` does), numeric owners only, no atime/ctime, and PAX
records only where ustar fields cannot hold a value or for xattrs (headers
formatted by runtime.tarwriter). It reads the tree only through directory fds, never by path, so that it can
also copy a tree something else still writes to (`live`, a cache mount).

apply_layer reads a layer (tarfile, streaming) into an empty snapshot. Every
filesystem call goes through a directory fd opened component by component
with O_NOFOLLOW, so no member, however named, can write outside the snapshot.
"""

from __future__ import annotations

import errno
import operator
import os
import resource
import stat
import tarfile
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISLNK, S_ISREG, S_ISSOCK
from typing import BinaryIO

from runtime import confine
from runtime.errors import RuntimeFailure, UnsafeLayer
from runtime.filecaps import CAPABILITY_XATTR, portable_capability
from runtime.fsutil import read_xattrs
from runtime.tarwriter import BLKTYPE, CHRTYPE, DIRTYPE, FIFOTYPE, LNKTYPE, REGTYPE, SYMTYPE, TarWriter
from runtime.unpack import Unpacker
from runtime.whiteouts import (
    OPAQUE_MARKER,
    OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    OVERLAY_XATTR_PREFIXES,
    WHITEOUT_PREFIX,
    is_whiteout,
)

_WHITEOUT_PREFIX_B = WHITEOUT_PREFIX.encode()
_OPAQUE_MARKER_B = OPAQUE_MARKER.encode()
# Overlay xattrs that make an upperdir mean more than its plain files; the
# snapshotter mounts with redirect_dir=off,metacopy=off so they never appear.
_UNPORTABLE_XATTRS = (OVERLAY_XATTR_PREFIX + "redirect", OVERLAY_XATTR_PREFIX + "metacopy")
# Kernel 6.7+ "xwhiteout": a regular file standing for a whiteout.
_XWHITEOUT_XATTR = OVERLAY_XATTR_PREFIX + "whiteout"


class UnportableSnapshot(RuntimeFailure):
    """A snapshot holding overlay metadata (redirects, metacopy) that a layer
    tar cannot express."""


# ---------------------------------------------------------------- writing

# The tree is read through directory fds, every name relative to its
# parent's fd and never followed. A path string would be resolved again by
# every call, through whatever a build that still writes to the tree (a
# cache mount shared with another build's RUN) swapped in meanwhile: a
# directory replaced by a symlink to a host directory between two calls.
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK, O_NOCTTY: should a fifo or a terminal stand where lstat saw a
# regular file, the open neither hangs nor gives pybuild a controlling tty.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OPEN_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# What a name answers once it no longer is what its listing saw: gone, or
# now a symlink (ELOOP), a non-directory (ENOTDIR), a non-symlink (EINVAL
# from readlink).
_CHANGED = frozenset((errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EINVAL))


class TreeChanged(RuntimeFailure):
    """An entry changed while a layer was written from a tree that should
    have held still."""


def write_layer(fs, out: BinaryIO, *, clamp_mtime: int | None = None, live: bool = False) -> int:
    """Write the snapshot directory `fs` to `out` as an uncompressed OCI layer.

    `out.write` may keep the object it is given (to hash or write it on
    another thread): no buffer is changed once handed over.

    `live`: something may change the tree meanwhile (a cache mount another
    build's RUN writes to). An entry that vanishes or changes type between
    its directory's listing and its own reading is then left out, as tar
    leaves out a file removed before it could read it, and a name is opened
    for reading only once an O_PATH fd showed it a regular file (a device
    node swapped in is never opened). Without `live` such a change fails
    with TreeChanged. Errors name entries by their path in the layer,
    never by a host path. Returns the number of entries left out."""
    writer = TarWriter(out, clamp_mtime)
    walk = _Walk(writer, live)
    try:
        walk.run(fs)
    finally:
        walk.close()
    writer.finish()
    return walk.skipped


class _Frame:
    """A directory whose entries are being written: its fd (-1 while closed
    to stay within the fd budget), the entries still to write, and what
    reopens it (its name in its parent, its (st_dev, st_ino))."""

    __slots__ = ("fd", "entries", "name", "arcname", "ident")

    def __init__(self, fd: int, name: bytes, arcname: bytes, ident: tuple[int, int]):
        self.fd = fd
        self.entries = iter(())
        self.name = name
        self.arcname = arcname
        self.ident = ident


class _Walk:
    """Depth-first, with an explicit stack of directory frames rather than
    recursion: a path may be thousands of directories deep. A frame holds
    its directory's fd while its entries are written; past the fd budget
    the shallowest frames give theirs up and are reopened from the root,
    name by name, when the walk comes back to them."""

    def __init__(self, writer: "TarWriter", live: bool):
        self.writer = writer
        self.live = live
        self.skipped = 0
        self.hardlinks: dict[tuple[int, int], bytes] = {}
        self.budget = _fd_budget()
        self.frames: list[_Frame] = []
        # frames[1:low] are closed, frames[low:] open; frames[0], the root, always is.
        self.low = 1

    def run(self, fs) -> None:
        fd = os.open(fs, _OPEN_DIR)
        root = _Frame(fd, b"", b"", (0, 0))
        frames = self.frames
        frames.append(root)
        root.entries = iter(self.list_dir(fd, b""))
        write_entry = self.write_entry
        while frames:
            frame = frames[-1]
            entry = next(frame.entries, None)
            if entry is None:
                frames.pop()
                if frame.fd >= 0:
                    os.close(frame.fd)
                    frame.fd = -1
                if self.low > len(frames):
                    self.low = len(frames)
                continue
            if frame.fd < 0:
                self.reopen(len(frames) - 1)
                if frame.fd < 0:
                    self.skipped += 1
                    continue
            write_entry(frame.fd, entry)

    def close(self) -> None:
        for frame in self.frames:
            if frame.fd >= 0:
                os.close(frame.fd)
                frame.fd = -1

    # -- reading the tree

    def list_dir(self, fd: int, prefix: bytes) -> list:
        """The directory's entries sorted by archive name: (archive name,
        name, lstat or None for a whiteout, xattrs or None when they are
        to be read through the entry's own fd)."""
        entries = []
        proc = None
        for text in os.listdir(fd):
            name = os.fsencode(text)
            try:
                st = os.lstat(name, dir_fd=fd)
                mode = st.st_mode
                if S_ISDIR(mode) or S_ISREG(mode) and st.st_size:
                    xattrs = None
                elif S_ISSOCK(mode):
                    xattrs = []  # never archived
                else:
                    # Nothing to read them through without opening the
                    # entry, which a device node must never be: the name
                    # under its directory's fd link, itself not followed.
                    if proc is None:
                        proc = b"/proc/self/fd/%d/" % fd
                    xattrs = read_xattrs(proc + name)
            except OSError as exc:
                self.changed(prefix + name, exc)
                continue
            # The kernel takes a 0/0 character device, or (6.7+) an empty
            # regular file carrying the xwhiteout xattr, for a whiteout.
            if (is_whiteout(st)
                    or xattrs and S_ISREG(mode) and _has_xattr(xattrs, _XWHITEOUT_XATTR)):
                entries.append((prefix + _WHITEOUT_PREFIX_B + name, name, None, ()))
            elif name.startswith(_WHITEOUT_PREFIX_B):
                # Refused, not written as it is (BuildKit writes it): whoever
                # unpacks the image would delete a file, or hide a directory,
                # that the step saw (fuse-overlayfs refuses to make the name).
                hidden = (f"empty /{prefix.decode(errors='replace')}" if name == OPAQUE_MARKER.encode()
                          else f"delete /{(prefix + name[len(_WHITEOUT_PREFIX_B):]).decode(errors='replace')}")
                raise UnportableSnapshot(
                    f"write layer: /{(prefix + name).decode(errors='replace')}: a file whose name starts with "
                    f"{WHITEOUT_PREFIX} cannot be in a layer: it would {hidden} for whoever unpacks the image "
                    "(OCI image spec, whiteouts)")
            else:
                entries.append((prefix + name, name, st, xattrs))
        entries.sort(key=_first)
        return entries

    def write_entry(self, dir_fd: int, entry) -> None:
        arcname, name, st, xattrs = entry
        writer = self.writer
        if st is None:
            # Whiteouts carry no metadata worth keeping; fixed values keep
            # the bytes independent of when the file was deleted.
            writer.marker(arcname)
            return
        mode = st.st_mode
        if S_ISDIR(mode):
            self.enter(dir_fd, name, arcname)
            return
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.hardlinks.get(key)
            if first is not None:
                writer.node(arcname, LNKTYPE, st, (), first)
                return
            if xattrs is not None:  # a regular file records itself once open
                self.hardlinks[key] = arcname
        if S_ISREG(mode):
            if xattrs is None:
                self.write_file(dir_fd, name, arcname)
            else:
                writer.node(arcname, REGTYPE, st, _portable(arcname, xattrs))
        elif S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as exc:
                self.changed(arcname, exc)
                return
            writer.node(arcname, SYMTYPE, st, _portable(arcname, xattrs), target)
        elif S_ISCHR(mode) or S_ISBLK(mode):
            writer.node(arcname, CHRTYPE if S_ISCHR(mode) else BLKTYPE, st, _portable(arcname, xattrs))
        elif S_ISFIFO(mode):
            writer.node(arcname, FIFOTYPE, st, _portable(arcname, xattrs))
        # Sockets are skipped, as tar does: they cannot be archived.

    def write_file(self, dir_fd: int, name: bytes, arcname: bytes) -> None:
        try:
            fd = self.open_file(dir_fd, name)
        except OSError as exc:
            self.changed(arcname, exc)
            return
        try:
            # The header describes the very inode whose bytes follow it.
            st = os.fstat(fd)
            if not S_ISREG(st.st_mode):
                self.changed(arcname, OSError(errno.EINVAL, "no longer a regular file"))
                return
            if st.st_nlink > 1:
                self.hardlinks[(st.st_dev, st.st_ino)] = arcname
            self.writer.node(arcname, REGTYPE, st, _portable(arcname, read_xattrs(fd)))
            self.writer.data(fd, st.st_size)
        finally:
            os.close(fd)

    def open_file(self, dir_fd: int, name: bytes) -> int:
        if not self.live:
            return os.open(name, _OPEN_FILE, dir_fd=dir_fd)
        path_fd = os.open(name, _OPEN_PATH, dir_fd=dir_fd)
        try:
            if not S_ISREG(os.fstat(path_fd).st_mode):
                raise OSError(errno.EINVAL, "no longer a regular file")
            # Reopened through the O_PATH fd's link: that very inode.
            return os.open(b"/proc/self/fd/%d" % path_fd, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(path_fd)

    def enter(self, dir_fd: int, name: bytes, arcname: bytes) -> None:
        """Write a directory's header and make it the frame whose entries
        come next."""
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
        except OSError as exc:
            self.changed(arcname, exc)
            return
        try:
            st = os.fstat(fd)
            xattrs = read_xattrs(fd)
        except BaseException:
            os.close(fd)
            raise
        frame = _Frame(fd, name, arcname, (st.st_dev, st.st_ino))
        frames = self.frames
        frames.append(frame)
        if len(frames) - self.low > self.budget:
            shallowest = frames[self.low]
            os.close(shallowest.fd)
            shallowest.fd = -1
            self.low += 1
        self.writer.node(arcname + b"/", DIRTYPE, st, _portable(arcname, xattrs))
        if _has_xattr(xattrs, OPAQUE_XATTR, b"y"):
            # Right after the directory, before its entries, so extractors
            # applying entries in order hide the lower contents first.
            self.writer.marker(arcname + b"/" + _OPAQUE_MARKER_B)
        frame.entries = iter(self.list_dir(fd, arcname + b"/"))

    def reopen(self, depth: int) -> None:
        """Open frames[1..depth] again from the root, one O_NOFOLLOW name at
        a time, each checked to be the directory it was; keep the deepest
        `budget` of them open."""
        frames = self.frames
        keep = max(1, depth + 1 - self.budget)
        parent = frames[0].fd
        for level in range(1, depth + 1):
            frame = frames[level]
            error = None
            try:
                fd = os.open(frame.name, _OPEN_DIR, dir_fd=parent)
            except OSError as exc:
                fd, error = -1, exc
            else:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != frame.ident:
                    os.close(fd)
                    fd, error = -1, OSError(errno.ENOENT, "replaced by another directory")
            if level - 1 >= 1 and level - 1 < keep:
                os.close(parent)
            if error is not None:
                self.lose(keep, level, depth, error)
                return
            if level >= keep:
                frame.fd = fd
            parent = fd
        self.low = keep

    def lose(self, kept: int, level: int, depth: int, error: OSError) -> None:
        """frames[level] is no longer where it was: the rest of it and of
        the frames below it cannot be written."""
        frames = self.frames
        for frame in frames[kept:level]:
            os.close(frame.fd)
            frame.fd = -1
        self.low = len(frames)
        self.changed(frames[level].arcname, error, lost=0)  # its header is written already
        for frame in frames[level:depth + 1]:
            self.skipped += operator.length_hint(frame.entries)
            frame.entries = iter(())

    def changed(self, arcname: bytes, exc: OSError, lost: int = 1) -> None:
        """An entry that is not what its listing saw: left out of a live
        tree, an error otherwise."""
        path = "/" + arcname.decode(errors="replace")
        if exc.errno not in _CHANGED:
            raise RuntimeFailure(f"write layer: {path}: {exc.strerror}") from exc
        if not self.live:
            raise TreeChanged(f"write layer: {path} changed while the layer was written ({exc.strerror})") from exc
        self.skipped += lost


def _portable(arcname: bytes, xattrs) -> list:
    """The xattrs a layer carries: overlay's own dropped, a file capability
    in its namespace-free (v2) form, and a snapshot whose overlay metadata a
    tar cannot express refused."""
    if not xattrs:
        return xattrs
    for name, _ in xattrs:
        if name.startswith(_UNPORTABLE_XATTRS):
            raise UnportableSnapshot(f"write layer: /{arcname.decode(errors='replace')} carries {name}")
    return [(n, portable_capability(v) if n == CAPABILITY_XATTR else v)
            for n, v in xattrs if not n.startswith(OVERLAY_XATTR_PREFIXES)]


def _fd_budget() -> int:
    """How many directory fds one walk may hold: a quarter of the soft
    RLIMIT_NOFILE, leaving the rest to the build's other threads."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(4, soft // 4)


def _first(entry):
    return entry[0]


def _has_xattr(xattrs, name: str, value: bytes | None = None) -> bool:
    for key, val in xattrs:
        if key == name:
            return value is None or val == value
    return False


def layer_is_empty(fs) -> bool:
    """True when the snapshot holds no change at all (a layer of no entries)."""
    with os.scandir(fs) as entries:
        return next(entries, None) is None


# ---------------------------------------------------------------- applying


def apply_layer(stream: BinaryIO, fs) -> None:
    """Extract the uncompressed OCI layer `stream` into the empty snapshot
    directory `fs`, turning `.wh.` entries back into overlay whiteouts.
    Refused with UnsafeLayer: names with `..` or a leading `/`, a path
    through a symlink or a non-directory, hard links to anything but an
    earlier non-directory entry, malformed whiteouts and archives;
    `trusted.overlay.*` and `user.overlay.*` xattrs are dropped (runtime.unpack has the rest)."""
    try:
        with confine.Tree(fs) as tree:
            _LayerUnpacker(tree).run(tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape"))
    except tarfile.TarError as exc:
        raise UnsafeLayer(f"apply layer: malformed archive: {exc}") from exc


class _LayerUnpacker(Unpacker):
    """A layer's policy: every name is a plain path below the snapshot, and
    nothing on the way may be a symlink (a layer has no business writing
    through one: the snapshot is its own, not yet merged with lower ones)."""

    whiteout_prefix = _WHITEOUT_PREFIX_B

    def member_parts(self, name: str) -> tuple[bytes, ...]:
        raw = os.fsencode(name)
        if raw.startswith(b"/"):
            raise self.refuse(name, "absolute member name")
        parts = tuple(part for part in raw.split(b"/") if part not in (b"", b"."))
        if b".." in parts:
            raise self.refuse(name, "member name contains '..'")
        return parts

    def refuse(self, member_name: str, why: str) -> Exception:
        return UnsafeLayer(f"apply layer: {member_name!r}: {why}")

    def root_member(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise self.refuse(member.name, "not a directory at the root")
        self.set_root_metadata(member)

    def open_parent(self, parts, member):
        # One O_NOFOLLOW open (or mkdir) per component, with a bounded
        # number of fds: a path may be 2000 levels deep.
        return self.open_below(parts, member, self._open_child)

    def _open_child(self, dir_fd: int, name: bytes, member, path) -> int:
        try:
            try:
                return os.open(name, _OPEN_DIR, dir_fd=dir_fd)
            except FileNotFoundError:
                os.mkdir(name, 0o755, dir_fd=dir_fd)
                fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
                os.fchmod(fd, 0o755)  # not the umask's
                return fd
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self.refuse(member.name, "path goes through a symlink or non-directory "
                                               f"{os.fsdecode(b'/'.join(path))!r}") from exc
            raise

    def whiteout(self, member, parent_fd: int, parent_real: bytes, parts) -> None:
        name = parts[-1]
        if name == _OPAQUE_MARKER_B:
            os.setxattr(parent_fd, OPAQUE_XATTR, b"y")
            return
        hidden = name[len(_WHITEOUT_PREFIX_B):]
        if hidden in (b"", b".", b"..") or hidden.startswith(_WHITEOUT_PREFIX_B):
            raise self.refuse(member.name, "invalid whiteout")
        self.clear(parent_fd, parent_real, hidden)
        # The form overlayfs itself writes: a 0/0 character device, mode 0.
        os.mknod(hidden, stat.S_IFCHR, 0, dir_fd=parent_fd)

    def xattrs(self, member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        found = []
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if name.startswith(OVERLAY_XATTR_PREFIXES):
                continue  # a layer must not forge overlay metadata
            found.append((name, value.encode("utf-8", "surrogateescape")))
        return found
