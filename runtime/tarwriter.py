"""The bytes of a layer tar, entry by entry: ustar headers with PAX records
only where ustar fields cannot hold a value or for xattrs, numeric owners
only, no atime/ctime. Formatted here rather than with tarfile, both to pin
every byte and because per-file Python overhead is what bounds the speed
of runtime.layer's write_layer on many small files."""

from __future__ import annotations

import errno
import io
import os
import stat
import zlib
from typing import BinaryIO

_BLOCK = 512
_CHUNK = 1 << 20
_SMALL_FILE = 1 << 16  # read whole into the output buffer below this size
_MAX_OCTAL_7 = 0o7777777
_MAX_OCTAL_11 = 0o77777777777

REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_PAX = b"x"


class TarWriter:
    def __init__(self, out: BinaryIO, clamp_mtime: int | None):
        self._out = out
        self._clamp = clamp_mtime
        self._buffer = bytearray()
        self._out_fd = _raw_fd(out)

    def marker(self, arcname: bytes) -> None:
        """An empty entry with fixed metadata: a whiteout or opaque marker."""
        self._entry(arcname, REGTYPE, 0, 0, 0, 0, 0, b"", 0, 0, ())

    def node(self, arcname: bytes, kind: bytes, st: os.stat_result, xattrs, linkname: bytes = b"") -> None:
        """The header of one entry; a regular file's data follows with `data`."""
        mtime = st.st_mtime_ns // 1_000_000_000
        if self._clamp is not None and mtime > self._clamp:
            mtime = self._clamp
        if kind == REGTYPE:
            size, major, minor = st.st_size, 0, 0
        elif kind == CHRTYPE or kind == BLKTYPE:
            size, major, minor = 0, os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            size, major, minor = 0, 0, 0
        self._entry(arcname, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, mtime, linkname,
                    major, minor, xattrs)

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

    def data(self, fd: int, size: int) -> None:
        """A regular file's data: exactly the `size` its header announced,
        zero-padded should the file have shrunk since."""
        if size == 0:
            return
        if size <= _SMALL_FILE:
            data = os.read(fd, size)
            self._buffer += data
            remaining = size - len(data)
        else:
            self._flush()
            remaining = self._stream(fd, size)
        if remaining:
            self._buffer += bytes(remaining)
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
