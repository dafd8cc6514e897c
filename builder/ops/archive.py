"""ADD's local archive extraction, confined to its destination directory.

As in BuildKit (solver/llbsolver/file/unpack.go), a source is an archive when
its *content* is a tar stream, plain or compressed with gzip, bzip2, xz or
zstd, whatever its name; anything else is copied as a plain file.

An archive is untrusted input. It is extracted by runtime.unpack (the
mechanism base layers use too: every operation relative to directory fds,
metadata never through a name the archive planted), with ADD's policy:
- names are cleaned from `/`, as BuildKit resolves them in a chroot of
  `dest`: a leading `/` is dropped and `../x`, `a/../../x` are `x`;
- members named as whiteouts apply as containerd's extraction applies them
  (BuildKit 0.13 does): `.wh.x` removes `x`, `.wh..wh..opq` what its
  directory holds but earlier members; neither is written;
- a symlink's target is stored as it is, whatever it names (`..`,
  `../../x`, `/etc`): BuildKit does too, it means something only inside the
  image once it runs; it is never followed on the host;
- a symlink planted by an earlier member (`x -> /`, `x -> ../..`) on a
  member's path is followed as if `dest` were `/` (openat2 RESOLVE_IN_ROOT),
  never out of it (BuildKit extracts in a chroot of `dest`), and a final
  symlink is replaced, never written through. One that points to nothing
  is followed too, and what it names made, where docker's extraction fails
  "no such file or directory";
- a hard link names an earlier non-directory member of this archive that is
  still there (docker would link any file below `dest`).

Owners are the archive's uid/gid (ADD --chown owns `dest` only, as in
BuildKit 0.13; a context archive is owned by whoever unpacks it); modes
(setuid included) and mtimes are the archive's. A hard link's own header
sets its inode's metadata (only the owner of a symlink's);
parent directories the archive does not list are made 0755 and owned by
root; sparse members stay sparse.
"""

from __future__ import annotations

import bz2
import errno
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

from runtime import confine
from runtime.unpack import Unpacker
from runtime.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX

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
        with _decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar, \
                confine.Tree(dest) as tree:
            _ArchiveUnpacker(tree, chown=owner).run(tar)
    except ArchiveError:
        raise
    except _DECOMPRESS_ERRORS as exc:
        raise ArchiveError(f"cannot read archive: {exc}") from exc


class _ArchiveUnpacker(Unpacker):
    """ADD's policy on runtime.unpack: names are cleaned as docker does, the
    destination stands for `/` when a member's path goes through a symlink,
    extract's `owner` (a context archive's: whoever unpacks it; never ADD's
    --chown) overrides every member's owner, and entry types tar has but a
    filesystem does not are skipped."""

    whiteout_prefix = WHITEOUT_PREFIX.encode()
    keeps_names = True

    def member_parts(self, name: str) -> tuple[bytes, ...]:
        cleaned = _member_name(name)
        return () if cleaned is None else tuple(os.fsencode(cleaned).split(b"/"))

    def whiteout(self, member, parent_fd: int, parent_real: bytes, parts) -> None:
        # As containerd's extraction applies them, in BuildKit's ADD too: the
        # name it hides goes; an opaque marker removes what its directory
        # holds but the archive's own members so far. Neither is written.
        name = parts[-1]
        if name == OPAQUE_MARKER.encode():
            for entry in os.listdir(parent_fd):
                child = os.fsencode(entry)
                if parts[:-1] + (child,) not in self.unpacked:
                    self.clear(parent_fd, parent_real, child)
            return
        hidden = name[len(self.whiteout_prefix):]
        if hidden in (b"", b".", b".."):
            raise self.refuse(member.name, "invalid whiteout")
        self.clear(parent_fd, parent_real, hidden)

    def refuse(self, member_name: str, why: str) -> Exception:
        return ArchiveError(f"{member_name}: {why}")

    def root_member(self, member) -> None:
        pass  # the archive's "./": dest keeps its own metadata

    def open_parent(self, parts, member):
        try:
            # Parents the archive does not list are root's 0755 even under
            # ADD --chown, which owns the destination only.
            fd = self.tree.make_dirs(b"/".join(parts), mode=0o755, owner=(0, 0))
        except confine.Refused:
            raise self.refuse(member.name, f"{os.fsdecode(b'/'.join(parts))}: not a directory") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise self.refuse(member.name, "too many levels of symbolic links on its path") from None
        return fd, os.fsencode(self.tree.image_path_of(fd))

    def unsupported(self, member) -> None:
        pass  # other tar types carry nothing to write


def _member_name(raw: str) -> str | None:
    """A member's path relative to dest, None for the root itself. As
    BuildKit's extraction resolves it in a chroot of dest: cleaned from
    `/`, so that `../x` and `a/../../x` are `x`."""
    return posixpath.normpath("/" + raw).lstrip("/") or None
