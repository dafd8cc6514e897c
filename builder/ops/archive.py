"""ADD's local archive extraction, confined to its destination directory.

As in BuildKit (solver/llbsolver/file/unpack.go), a source is an archive when
its *content* is a tar stream, plain or compressed with gzip, bzip2, xz or
zstd, whatever its name; anything else is copied as a plain file.

An archive is untrusted input. Every member is placed below the destination
directory and nothing it contains can take a write elsewhere:
- a name that climbs out (`../x`, `a/../../x`) refuses the whole archive, as
  docker's "breakout" check does; a leading `/` is dropped (tar convention);
- a symlink whose relative target climbs out of the destination is refused;
  absolute targets are kept, they mean the image's `/` once it runs;
- paths are resolved with `resolve_in_root(dest, ...)`, so a symlink planted
  by an earlier member (`x -> /`, `x -> ../..`) is followed as if `dest` were
  `/`, never out of it, and a final symlink is replaced, never written through;
- a hard link must name a member already extracted below `dest`.

Owners are the archive's uid/gid unless ADD --chown gives one; modes
(setuid included) and mtimes are the archive's. A hard link's own header
sets its inode's metadata; parent directories the archive does not list are
made 0755 and owned by root.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import posixpath
import stat
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import zstandard

from runtime.fsutil import remove_tree, resolve_in_root

_MAGIC = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_DECOMPRESS_ERRORS = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zstandard.ZstdError)


class ArchiveError(Exception):
    """An archive that cannot be extracted safely or at all."""


def compression_of(path: Path) -> str:
    """"gzip", "bzip2", "xz", "zstd" or "" (uncompressed or not an archive)."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return ""


@contextmanager
def _decompressed(path: Path) -> Iterator[BinaryIO]:
    kind = compression_of(path)
    with open(path, "rb") as raw:
        if kind == "gzip":
            stream = gzip.GzipFile(fileobj=raw)
        elif kind == "bzip2":
            stream = bz2.BZ2File(raw)
        elif kind == "xz":
            stream = lzma.LZMAFile(raw)
        elif kind == "zstd":
            stream = zstandard.ZstdDecompressor().stream_reader(raw)
        else:
            stream = raw
        try:
            yield stream
        finally:
            if stream is not raw:
                stream.close()


def is_archive(path: Path) -> bool:
    """True when `path` is a regular file whose content starts a tar stream
    (BuildKit: the first tar header reads without error)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with _decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            # Opening in stream mode reads the first header (firstmember).
            return tar.firstmember is not None
    except _DECOMPRESS_ERRORS:
        return False


def extract(path: Path, dest: Path, *, owner: tuple[int, int] | None = None) -> None:
    """Extract the archive at `path` into the existing directory `dest`."""
    try:
        with _decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            _Extractor(Path(dest), owner).run(tar)
    except ArchiveError:
        raise
    except _DECOMPRESS_ERRORS as exc:
        raise ArchiveError(f"cannot read archive: {exc}") from exc


class _Extractor:
    def __init__(self, dest: Path, owner: tuple[int, int] | None):
        self.dest = dest
        self.owner = owner
        self._dirs: list[tuple[Path, tarfile.TarInfo]] = []

    def run(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            name = _member_name(member.name)
            if name is None:
                continue  # the archive's "./": dest keeps its own metadata
            self._extract_one(tar, member, name)
        # Deepest first, so children do not bump a directory's mtime after it
        # is set, and a read-only directory is made read-only last.
        for path, member in reversed(self._dirs):
            self._set_metadata(path, member)

    def _extract_one(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
        parent_rel, base = posixpath.split(name)
        parent = self._ensure_dir(parent_rel)
        target = parent / base
        existing = _lstat(target)
        if member.isdir():
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(target)
                existing = None
            if existing is None:
                os.mkdir(target, 0o700)
            self._dirs.append((target, member))
            return
        if existing is not None:
            # As docker's archive unpacking does: a non-directory member
            # replaces whatever is there, a directory tree included.
            remove_tree(target)
        if member.isreg():
            source = tar.extractfile(member)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
        elif member.issym():
            self._check_symlink(name, member.linkname)
            os.symlink(member.linkname, target)
        elif member.islnk():
            link_name = _member_name(member.linkname)
            if link_name is None:
                raise ArchiveError(f"{name}: invalid hard link target {member.linkname!r}")
            source_path = resolve_in_root(self.dest, link_name, follow_final=False)
            source_st = _lstat(source_path)
            if source_st is None or stat.S_ISDIR(source_st.st_mode):
                raise ArchiveError(f"{name}: hard link target {member.linkname!r} is not in the archive")
            os.link(source_path, target, follow_symlinks=False)
            # Falls through: the link's own header sets the shared inode's
            # owner, mode and times, as docker's unpacking does.
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(target, 0o600)
        else:
            return  # other tar types carry nothing to write
        self._set_metadata(target, member)

    def _ensure_dir(self, rel: str) -> Path:
        """The directory `rel` below dest, created (0755) when missing, resolved
        as if dest were `/`."""
        resolved = resolve_in_root(self.dest, rel) if rel else self.dest
        current = self.dest
        for part in os.path.relpath(resolved, self.dest).split("/"):
            if part == ".":
                continue
            current = current / part
            st = _lstat(current)
            if st is None:
                # Parents the archive does not list are root's 0755 even
                # under ADD --chown, which applies to the members only.
                os.mkdir(current, 0o755)
                os.chmod(current, 0o755)
                os.chown(current, 0, 0)
            elif not stat.S_ISDIR(st.st_mode):
                raise ArchiveError(f"{rel}: not a directory")
        return current

    def _check_symlink(self, name: str, linkname: str) -> None:
        if linkname.startswith("/"):
            return
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), linkname))
        if joined == ".." or joined.startswith("../"):
            raise ArchiveError(f"{name}: symlink target {linkname!r} points outside the destination")

    def _set_metadata(self, path: Path, member: tarfile.TarInfo) -> None:
        uid, gid = self.owner if self.owner is not None else (member.uid, member.gid)
        os.chown(path, uid, gid, follow_symlinks=False)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)
        mtime_ns = int(member.mtime * 1_000_000_000)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def _member_name(raw: str) -> str | None:
    """A member's path relative to dest; None for the root itself; raises
    ArchiveError for a path that climbs out."""
    cleaned = posixpath.normpath(raw.lstrip("/")) if raw.lstrip("/") else "."
    if cleaned == "..":
        raise ArchiveError(f"invalid archive member {raw!r}: it would be written outside the destination")
    if cleaned.startswith("../"):
        raise ArchiveError(f"invalid archive member {raw!r}: it would be written outside the destination")
    return None if cleaned == "." else cleaned


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
