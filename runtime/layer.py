"""Snapshot (overlay upperdir form) <-> OCI layer tar.

write_layer produces the same bytes for the same files, every time: entries
in depth-first order with each directory's entries sorted by their bytes
(what `tar --sort=name` does), numeric owners only, no atime/ctime, and PAX
records only where ustar fields cannot hold a value or for xattrs. Headers
are formatted here rather than with tarfile, both to pin every byte and
because per-file Python overhead is what bounds the speed on many small files.

apply_layer reads a layer (tarfile, streaming) into an empty snapshot. Every
filesystem call goes through a directory fd opened component by component
with O_NOFOLLOW, so no member, however named, can write outside the snapshot.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import zlib
from typing import BinaryIO

from runtime import confine
from runtime.errors import RuntimeFailure, UnsafeLayer
from runtime.fsutil import read_xattrs
from runtime.unpack import Unpacker

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_WHITEOUT_PREFIX_B = WHITEOUT_PREFIX.encode()
_OPAQUE_MARKER_B = OPAQUE_MARKER.encode()

_OVERLAY_XATTR = "trusted.overlay."
_OPAQUE_XATTR = "trusted.overlay.opaque"
# Overlay xattrs that make an upperdir mean more than its plain files; the
# snapshotter mounts with redirect_dir=off,metacopy=off so they never appear.
_UNPORTABLE_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
# Kernel 6.7+ "xwhiteout": a regular file standing for a whiteout.
_XWHITEOUT_XATTR = "trusted.overlay.whiteout"

_BLOCK = 512
_CHUNK = 1 << 20
_SMALL_FILE = 1 << 16  # read whole into the output buffer below this size
_MAX_OCTAL_7 = 0o7777777
_MAX_OCTAL_11 = 0o77777777777

_REG, _LNK, _SYM, _CHR, _BLK, _DIR, _FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_PAX = b"x"


class UnportableSnapshot(RuntimeFailure):
    """A snapshot holding overlay metadata (redirects, metacopy) that a layer
    tar cannot express."""


# ---------------------------------------------------------------- writing


def write_layer(fs, out: BinaryIO, *, clamp_mtime: int | None = None) -> None:
    """Write the snapshot directory `fs` to `out` as an uncompressed OCI layer.

    `out.write` may keep the object it is given (to hash or write it on
    another thread): no buffer is changed once handed over."""
    writer = _TarWriter(out, clamp_mtime)
    hardlinks: dict[tuple[int, int], bytes] = {}
    # Depth-first with an explicit stack of per-directory iterators rather
    # than recursion: a path may be 2000 directories deep.
    stack = [iter(writer.list_dir(os.fsencode(os.fspath(fs)), b""))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        subdir = writer.write_entry(entry, hardlinks)
        if subdir is not None:
            stack.append(iter(writer.list_dir(*subdir)))
    writer.finish()


class _TarWriter:
    def __init__(self, out: BinaryIO, clamp_mtime: int | None):
        self._out = out
        self._clamp = clamp_mtime
        self._buffer = bytearray()
        self._out_fd = _raw_fd(out)

    def list_dir(self, host_dir: bytes, prefix: bytes) -> list:
        """A directory's entries sorted by archive name:
        (archive name, host path, lstat or None for a whiteout, xattrs)."""
        entries = []
        for name in os.listdir(host_dir):
            host = host_dir + b"/" + name
            st = os.lstat(host)
            xattrs = read_xattrs(host) if _may_have_xattrs(st) else []
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 or _has_xattr(xattrs, _XWHITEOUT_XATTR):
                entries.append((prefix + _WHITEOUT_PREFIX_B + name, host, None, ()))
            else:
                entries.append((prefix + name, host, st, xattrs))
        entries.sort(key=_first)
        return entries

    def write_entry(self, entry, hardlinks) -> tuple[bytes, bytes] | None:
        """Write one entry; for a directory return (host path, archive
        prefix) of its contents, which must come next."""
        arcname, host, st, xattrs = entry
        if st is None:
            # Whiteouts carry no metadata worth keeping; fixed values keep
            # the bytes independent of when the file was deleted.
            self._entry(arcname, _REG, 0, 0, 0, 0, 0, b"", 0, 0, ())
            return None
        for name, _ in xattrs:
            if name.startswith(_UNPORTABLE_XATTRS):
                raise UnportableSnapshot(f"write layer: {host.decode(errors='replace')} carries {name}")
        kept = [(n, v) for n, v in xattrs if not n.startswith(_OVERLAY_XATTR)]
        self._write_node(arcname, host, st, kept, hardlinks)
        if not stat.S_ISDIR(st.st_mode):
            return None
        if _has_xattr(xattrs, _OPAQUE_XATTR, b"y"):
            # Right after the directory, before its entries, so extractors
            # applying entries in order hide the lower contents first.
            self._entry(arcname + b"/" + _OPAQUE_MARKER_B, _REG, 0, 0, 0, 0, 0, b"", 0, 0, ())
        return host, arcname + b"/"

    def _write_node(self, arcname: bytes, host: bytes, st: os.stat_result, xattrs, hardlinks) -> None:
        mode = st.st_mode
        perm = stat.S_IMODE(mode)
        mtime = st.st_mtime_ns // 1_000_000_000
        if self._clamp is not None and mtime > self._clamp:
            mtime = self._clamp
        uid, gid = st.st_uid, st.st_gid
        if stat.S_ISDIR(mode):
            self._entry(arcname + b"/", _DIR, perm, uid, gid, 0, mtime, b"", 0, 0, xattrs)
            return
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = hardlinks.get(key)
            if first is not None:
                self._entry(arcname, _LNK, perm, uid, gid, 0, mtime, first, 0, 0, ())
                return
            hardlinks[key] = arcname
        if stat.S_ISREG(mode):
            self._entry(arcname, _REG, perm, uid, gid, st.st_size, mtime, b"", 0, 0, xattrs)
            self._file_data(host, st.st_size)
        elif stat.S_ISLNK(mode):
            self._entry(arcname, _SYM, perm, uid, gid, 0, mtime, os.readlink(host), 0, 0, xattrs)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = _CHR if stat.S_ISCHR(mode) else _BLK
            self._entry(arcname, kind, perm, uid, gid, 0, mtime, b"", os.major(st.st_rdev), os.minor(st.st_rdev), xattrs)
        elif stat.S_ISFIFO(mode):
            self._entry(arcname, _FIFO, perm, uid, gid, 0, mtime, b"", 0, 0, xattrs)
        # Sockets are skipped, as tar does: they cannot be archived.

    def _entry(self, name, kind, perm, uid, gid, size, mtime, linkname, major, minor, xattrs) -> None:
        pax: list[tuple[bytes, bytes]] = []
        ustar_name, prefix = _split_name(name)
        if ustar_name is None:
            pax.append((b"path", name))
            ustar_name, prefix = name[:100], b""
        if len(linkname) > 100:
            pax.append((b"linkpath", linkname))
            linkname = linkname[:100]
        if uid > _MAX_OCTAL_7:
            pax.append((b"uid", b"%d" % uid))
            uid = 0
        if gid > _MAX_OCTAL_7:
            pax.append((b"gid", b"%d" % gid))
            gid = 0
        if size > _MAX_OCTAL_11:
            pax.append((b"size", b"%d" % size))
            size_field = 0
        else:
            size_field = size
        if mtime < 0 or mtime > _MAX_OCTAL_11:
            pax.append((b"mtime", b"%d" % mtime))
            mtime = 0
        if pax and any(not _is_utf8(value) for key, value in pax if key in (b"path", b"linkpath")):
            pax.insert(0, (b"hdrcharset", b"BINARY"))
        for xname, xvalue in xattrs:
            pax.append((b"SCHILY.xattr." + xname.encode(), xvalue))
        buffer = self._buffer
        if pax:
            records = b"".join(_pax_record(key, value) for key, value in pax)
            buffer += _ustar(b"././@PaxHeader", 0o644, 0, 0, len(records), 0, _PAX, b"", 0, 0, b"")
            buffer += records
            buffer += bytes(-len(records) % _BLOCK)
        buffer += _ustar(ustar_name, perm, uid, gid, size_field, mtime, kind, linkname, major, minor, prefix)
        if len(buffer) >= _CHUNK:
            self._flush()

    def _file_data(self, host: bytes, size: int) -> None:
        if size == 0:
            return
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if size <= _SMALL_FILE:
                data = os.read(fd, size)
                # A file that changed size since lstat still gets exactly the
                # size its header announced.
                self._buffer += data
                remaining = size - len(data)
            else:
                self._flush()
                remaining = self._stream(fd, size)
            if remaining:
                self._buffer += bytes(remaining)
        finally:
            os.close(fd)
        self._buffer += bytes(-size % _BLOCK)
        if len(self._buffer) >= _CHUNK:
            self._flush()

    def _stream(self, fd: int, size: int) -> int:
        remaining = size
        if self._out_fd is not None:
            try:
                while remaining > 0:
                    sent = os.sendfile(self._out_fd, fd, None, min(remaining, 1 << 30))
                    if sent == 0:
                        break
                    remaining -= sent
                return remaining
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS) or remaining != size:
                    raise
                self._out_fd = None  # not a sendfile target; fall back for good
        write = self._out.write
        while remaining > 0:
            # A fresh object per chunk: `out` may keep it (see write_layer).
            chunk = os.read(fd, min(remaining, _CHUNK))
            if not chunk:
                break
            write(chunk)
            remaining -= len(chunk)
        return remaining

    def _flush(self) -> None:
        if self._buffer:
            self._out.write(self._buffer)
            self._buffer = bytearray()
        if self._out_fd is not None:
            self._out.flush()

    def finish(self) -> None:
        self._buffer += bytes(2 * _BLOCK)
        self._flush()
        self._out.flush()


def _raw_fd(out) -> int | None:
    """The fd to sendfile() into, when `out` is a plain file object whose
    bytes nobody else needs to see (a hashing wrapper has no fileno)."""
    if not isinstance(out, (io.FileIO, io.BufferedWriter, io.BufferedRandom)):
        return None
    try:
        return out.fileno()
    except (OSError, io.UnsupportedOperation):
        return None


def _first(entry):
    return entry[0]


def _may_have_xattrs(st: os.stat_result) -> bool:
    return not stat.S_ISSOCK(st.st_mode)


def _has_xattr(xattrs, name: str, value: bytes | None = None) -> bool:
    for key, val in xattrs:
        if key == name:
            return value is None or val == value
    return False


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _split_name(name: bytes) -> tuple[bytes | None, bytes]:
    """ustar's name (100) + prefix (155) split, or (None, b"") for PAX."""
    if len(name) <= 100:
        return name, b""
    if len(name) > 256:
        return None, b""
    # The prefix is everything before some '/', the name what follows it.
    cut = name.find(b"/", len(name) - 101)
    while cut != -1:
        if cut <= 155 and 0 < len(name) - cut - 1 <= 100:
            return name[cut + 1:], name[:cut]
        cut = name.find(b"/", cut + 1)
    return None, b""


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) > len(str(len(body))):
        length += 1
    return b"%d" % length + body


def _ustar(name, mode, uid, gid, size, mtime, kind, linkname, major, minor, prefix) -> bytes:
    header = b"".join((
        name.ljust(100, b"\0"),
        b"%07o\0" % mode,
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b"        ",  # checksum, counted as spaces
        kind,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        bytes(64),  # uname, gname: numeric owners only
        b"%07o\0" % major,
        b"%07o\0" % minor,
        prefix.ljust(155, b"\0"),
        bytes(12),
    ))
    return header[:148] + b"%06o\0 " % _byte_sum(header) + header[156:]


def _byte_sum(header: bytes) -> int:
    """sum(header) for a 512-byte header, in C: adler32's low half is 1 +
    the byte sum modulo 65521, and 256 bytes sum to at most 65280, so for
    each half it is exact (sum() costs 2 us a header: 40 ms a 20k-file layer)."""
    return (zlib.adler32(header[:256]) & 0xFFFF) + (zlib.adler32(header[256:]) & 0xFFFF) - 2


def layer_is_empty(fs) -> bool:
    """True when the snapshot holds no change at all (a layer of no entries)."""
    with os.scandir(fs) as entries:
        return next(entries, None) is None


# ---------------------------------------------------------------- applying

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def apply_layer(stream: BinaryIO, fs) -> None:
    """Extract the uncompressed OCI layer `stream` into the empty snapshot
    directory `fs`, turning `.wh.` entries back into overlay whiteouts.
    Refused with UnsafeLayer: names with `..` or a leading `/`, a path
    through a symlink or a non-directory, hard links to anything but an
    earlier non-directory entry, malformed whiteouts and archives;
    `trusted.overlay.*` xattrs are dropped (runtime.unpack has the rest)."""
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
        # From the deepest directory already open, one O_NOFOLLOW open (or
        # mkdir) per component; iterative: a path may be 2000 levels deep.
        depth = len(parts) - 1
        while depth and parts[:depth] not in self.open_dirs:
            depth -= 1
        fd, real = self.cached_dir(parts[:depth], member)
        for depth in range(depth, len(parts)):
            if depth:
                self.open_dirs[parts[:depth]] = (fd, real)  # an intermediate one: cached too
            fd = self._open_child(fd, parts[depth], member, parts[:depth + 1])
            real = b"/" + b"/".join(parts[:depth + 1])
        return fd, real

    def _open_child(self, dir_fd: int, name: bytes, member, path) -> int:
        try:
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                os.mkdir(name, 0o755, dir_fd=dir_fd)
                fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
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
            os.setxattr(parent_fd, _OPAQUE_XATTR, b"y")
            return
        hidden = name[len(_WHITEOUT_PREFIX_B):]
        if hidden in (b"", b".", b"..") or hidden.startswith(_WHITEOUT_PREFIX_B):
            raise self.refuse(member.name, "invalid whiteout")
        existing = _lstat_at(parent_fd, hidden)
        if existing is not None:
            self.remove(parent_fd, parent_real, hidden, existing)
        # The form overlayfs itself writes: a 0/0 character device, mode 0.
        os.mknod(hidden, stat.S_IFCHR, 0, dir_fd=parent_fd)

    def xattrs(self, member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        found = []
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if name.startswith(_OVERLAY_XATTR):
                continue  # a layer must not forge overlay metadata
            found.append((name, value.encode("utf-8", "surrogateescape")))
        return found


def _lstat_at(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
