"""COPY, ADD, COPY <<EOF and WORKDIR's mkdir, into a mounted root filesystem.

Semantics are BuildKit's file op (solver/llbsolver/file + fsutil `copy`):
- A directory source copies its *contents*; the destination directory is
  created (0755) when missing, and an existing one keeps its metadata.
- A file goes to `dest` itself, or into it when `dest` ends with "/" or is an
  existing directory (following symlinks, inside the rootfs).
- More than one source (or wildcard match) with a `dest` not ending in "/"
  is copied to `dest` one after the other, as BuildKit does (docker 26): a
  file replaces the one before, a directory merges into `dest`.
- Missing parent directories are created 0755, owned by the --chown owner
  (BuildKit's MkdirAll chowns what it creates) or 0:0.
- Copied entries keep their permission bits and mtimes; --chmod (octal, or
  symbolic like `u+x,go-w` as BuildKit accepts) replaces the bits of every
  copied file and directory, never those of created parents.
- Owner: the --chown user/group, resolved in the *destination* rootfs's
  /etc/passwd and /etc/group; without --chown, 0:0 for the build context and
  the source owner for a stage or image (BuildKit preserves it there).
- Symlinks are copied as symlinks; hard links between copied files are kept
  within one source path or wildcard match (BuildKit's fsutil copy keeps an
  inode table per match), not across them; devices and fifos are recreated.
- Writes never leave the rootfs (runtime.confine): `dest` is resolved inside
  it by the kernel (openat2 RESOLVE_IN_ROOT; a symlink to `/` or `../..` in
  the image means the image's `/`, a dangling one leads to what it points
  at, as BuildKit's fs.RootPath). Below it nothing is followed: every entry
  is made relative to its parent's fd with O_NOFOLLOW|O_EXCL, its metadata
  set through its own fd; a file or symlink in a new file's way is
  replaced, and an existing symlink where a directory is to be merged is an
  error, as in BuildKit ("cannot copy to non-directory").
- ADD extracts a local tar archive (recognised by content, not by name) into
  `dest` (see builder/ops/archive.py); URLs are fetched by
  builder/ops/http.py and are not extracted.
"""


from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from builder.context.trees import BuildContext, Match, Selection
from builder.ops import archive
from builder.ops.copier import Copier
from builder.ops.copy_options import CopyError, ModeFn, Owner, checked_options
from frontend.ops import InlineFile
from runtime.confine import Refused, Tree
from runtime.users import resolve_chown

_INLINE_FILE_MODE = 0o644  # BuildKit's Mkfile mode for heredoc files


def copy_into(rootfs: Path, selection: Selection, dest: str, *, chown: str = "", chmod: str = "",
              parents: bool = False, unpack: bool = False, instruction: str = "COPY") -> None:
    """Copy a selection (from the context, a stage or an image) into `rootfs`.

    `dest` is absolute in the image (WORKDIR already joined); a trailing "/"
    means "into this directory". `unpack` is ADD's archive extraction.
    """
    owner, mode_fn, into_dir = checked_options(rootfs, selection, dest, chown, chmod, instruction)
    if not selection.matches:
        return  # wildcards that matched nothing: BuildKit does nothing at all
    dest_clean = posixpath.normpath("/" + dest)
    with Tree(rootfs) as tree:
        copier = Copier(tree, owner, mode_fn, selection.preserve_ownership)
        # Each match's content is sniffed once: it decides both where `dest`
        # is and what is done with the match.
        extracts = [_extracts(match, unpack) for match in selection.matches]
        if not (into_dir or parents or dest_clean == "/" or any(extracts)):
            # `dest` names each source in turn, or an existing directory to
            # put it in (BuildKit copies several sources one after the other).
            for match in selection.matches:
                _copy_to_name(copier, match, dest_clean)
            return
        with _confined(dest_clean):
            dest_fd = copier.make_dirs(dest_clean)
        try:
            for match, extract in zip(selection.matches, extracts):
                if extract:
                    try:
                        # --chown makes dest only: members keep the archive's
                        # owners, as in BuildKit 0.13 (add-archive-chown)
                        archive.extract(match.root.path, copier.host_path(dest_fd))
                    except archive.ArchiveError as exc:
                        raise CopyError(f"{instruction} failed: {match.name}: {exc}") from exc
                elif parents:
                    copier.copy_match_with_parents(match, dest_fd, selection.tree)
                else:
                    copier.copy_match_into(match, dest_fd)
        finally:
            os.close(dest_fd)


def _copy_to_name(copier: Copier, match: Match, dest: str) -> None:
    with _confined(dest):
        dest_fd = copier.existing_dir(dest)
        target = None if dest_fd is not None else copier.make_target_parent(dest)
    if target is None:
        try:
            copier.copy_match_into(match, dest_fd)
        finally:
            os.close(dest_fd)
        return
    parent_fd, name = target
    try:
        copier.copy_match_to(match, parent_fd, name)
    finally:
        os.close(parent_fd)


def _extracts(match: Match, unpack: bool) -> bool:
    """ADD of a local archive (recognised by content, not by name)."""
    return unpack and stat.S_ISREG(match.root.stat.st_mode) and archive.is_archive(match.root.path)


@contextlib.contextmanager
def _confined(dest: str):
    """The errors of resolving `dest` in the image, as COPY reports them."""
    try:
        yield
    except Refused as exc:
        raise CopyError(f"cannot create directory {exc.path}: {exc.why}") from None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise CopyError(f"cannot resolve {dest}: too many levels of symbolic links") from None


@dataclass(frozen=True)
class DirectCopy:
    """A COPY whose writes all land below one directory that the merged view
    shows empty: its files can be written straight into the new snapshot's
    upper directory, unmounted, instead of through overlayfs (where every
    create costs a copy-up check and copy_file_range fails with EXDEV). No
    lower entry can be shadowed there, so the upper ends up as overlay would
    have left it. `plan_direct` made the directory, through the mount."""

    dest_rel: str  # the destination directory, relative to the rootfs, symlinks resolved
    owner: Owner | None
    mode_fn: ModeFn | None
    preserve_ownership: bool

    def run(self, upper: Path, selection: Selection, reuse=None) -> None:
        """Copy `selection` into `upper` (the snapshot's fs, not mounted)."""
        try:
            with Tree(upper) as tree:
                try:
                    # The view resolved every symlink on the way: the upper
                    # holds plain directories there, and O_NOFOLLOW keeps it so.
                    target = tree.open(self.dest_rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        raise
                    raise CopyError(f"cannot copy to non-directory: /{self.dest_rel}") from None
                try:
                    copier = Copier(tree, self.owner, self.mode_fn, self.preserve_ownership, reuse=reuse)
                    for match in selection.matches:
                        copier.copy_match_into(match, target)
                finally:
                    os.close(target)
        finally:
            if reuse is not None:
                reuse.close()


def plan_direct(rootfs: Path, selection: Selection, dest: str, *, chown: str = "", chmod: str = "",
                parents: bool = False, unpack: bool = False, instruction: str = "COPY") -> DirectCopy | None:
    """On the mounted view: check what copy_into would, create the
    destination directory as it would, and return a DirectCopy when every
    write goes below that directory and the view shows it empty. None means
    "use copy_into on the view" (a file destination, ADD's archives,
    --parents, a destination with contents)."""
    owner, mode_fn, into_dir = checked_options(rootfs, selection, dest, chown, chmod, instruction)
    if not selection.matches or unpack or parents:
        return None
    if not into_dir and not all(match.is_dir for match in selection.matches):
        return None  # a file copied to a file name: one create, through the view
    dest_clean = posixpath.normpath("/" + dest)
    with Tree(rootfs) as tree, _confined(dest_clean):
        copier = Copier(tree, owner, mode_fn, selection.preserve_ownership)
        target = copier.existing_dir(dest_clean)
        if target is None:
            parent_fd, name = copier.make_target_parent(dest_clean)
            try:
                target = copier.make_dir_at(parent_fd, name)
            except CopyError:
                return None  # not a directory: copy_into reports it
            finally:
                os.close(parent_fd)
        else:
            try:
                lower_entries = os.listdir(target)
            except BaseException:
                os.close(target)
                raise
            if lower_entries:
                os.close(target)
                return None  # lower entries to merge with: the view knows them
            # Make overlay copy the (empty) lower directory up now, as creating
            # the first file through the view would, so the upper has it with
            # its lower metadata. The probe is upper-only: no whiteout is left.
            probe = f".pybuild-probe-{os.getpid()}-{threading.get_ident()}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=target))
            os.unlink(probe, dir_fd=target)
        try:
            dest_image = tree.image_path_of(target)
        finally:
            os.close(target)
    if dest_image == "/":
        return None  # the root is never empty
    return DirectCopy(dest_image.lstrip("/"), owner, mode_fn, selection.preserve_ownership)


def write_files(rootfs: Path, files: Sequence[InlineFile], dest: str, *, chown: str = "", chmod: str = "",
                mtime_ns: int | None = None, scratch_dir: Path | None = None) -> None:
    """COPY <<EOF: files whose bytes are in the Dockerfile, then copied exactly
    like context files (0644 unless --chmod). `mtime_ns` None means now, as
    BuildKit's Mkfile leaves it."""
    with tempfile.TemporaryDirectory(prefix="pybuild-inline-", dir=scratch_dir) as tmp:
        names = []
        for inline in files:
            name = posixpath.normpath("/" + inline.name).lstrip("/")
            if not name or "/" in name:
                raise CopyError(f"invalid inline file name: {inline.name!r}")
            path = Path(tmp, name)
            path.write_bytes(inline.content)
            os.chmod(path, _INLINE_FILE_MODE)
            if mtime_ns is not None:
                os.utime(path, ns=(mtime_ns, mtime_ns))
            names.append(name)
        selection = BuildContext(Path(tmp)).select(names)
        copy_into(rootfs, selection, dest, chown=chown, chmod=chmod)


def make_dir(rootfs: Path, path: str, *, user: str = "") -> str:
    """WORKDIR: mkdir -p inside the rootfs; the directories it creates are
    owned by `user` (BuildKit passes the stage's USER), existing ones are
    left alone. Returns the image path it made, symlinks resolved.

    BuildKit never fails a WORKDIR on its USER: what the passwd and group
    files lack is id 0 (users.resolve_chown with strict=False)."""
    owner = resolve_chown(rootfs, user, strict=False) if user else (0, 0)
    clean = posixpath.normpath("/" + path)
    with Tree(rootfs) as tree, _confined(clean):
        fd = Copier(tree, owner, None, False).make_dirs(clean)
        try:
            return tree.image_path_of(fd)
        finally:
            os.close(fd)
