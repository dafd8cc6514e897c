"""COPY, ADD, COPY <<EOF and WORKDIR's mkdir, into a mounted root filesystem.

Semantics are BuildKit's file op (solver/llbsolver/file + fsutil `copy`):
- A directory source copies its *contents*; the destination directory is
  created (0755) when missing, and an existing one keeps its metadata.
- A file goes to `dest` itself, or into it when `dest` ends with "/" or is an
  existing directory (following symlinks, inside the rootfs).
- More than one source, or a wildcard matching more than one path, needs a
  `dest` ending with "/" (docker's rule and message; BuildKit would silently
  overwrite one file with the next).
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
- Writes never leave the rootfs: `dest` is resolved with `resolve_in_root`
  (a symlink to `/` or `../..` in the image means the image's `/`), and
  below it nothing is followed: every entry is created with lstat checks and
  O_NOFOLLOW|O_EXCL, and an existing symlink where a directory is to be
  merged is an error, as in BuildKit ("cannot copy to non-directory").
- ADD extracts a local tar archive (recognised by content, not by name) into
  `dest` (see builder/ops/archive.py); URLs are fetched by
  builder/ops/http.py and are not extracted.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from builder.context import BuildContext, Entry, Match, Selection
from builder.errors import PybuildError
from builder.ops import archive
from frontend.ops import InlineFile
from runtime.fsutil import copy_file, read_xattrs, resolve_in_root
from runtime.users import resolve_chown

Owner = tuple[int, int]
ModeFn = Callable[[int], int]  # st_mode of the source -> permission bits to set

SKIP_XATTRS = ("security.selinux",)
_INLINE_FILE_MODE = 0o644  # BuildKit's Mkfile mode for heredoc files


class CopyError(PybuildError):
    """A COPY/ADD that cannot be done as asked (the CLI reports it on one line)."""


def _checked_options(rootfs: Path, selection: Selection, dest: str, chown: str, chmod: str,
                     instruction: str) -> tuple[Owner | None, ModeFn | None, bool]:
    """The owner, mode function and into-a-directory flag of a COPY, once
    its sources and destination are known to fit together."""
    owner = _resolve_owner(rootfs, chown) if chown else None
    mode_fn = parse_chmod(chmod) if chmod else None
    into_dir = dest.endswith("/") or dest.endswith("/.")
    if not into_dir and (len(selection.sources) > 1 or len(selection.matches) > 1):
        raise CopyError(f"When using {instruction} with more than one source file, "
                        "the destination must be a directory and end with a /")
    return owner, mode_fn, into_dir


def _resolve_owner(rootfs: Path, spec: str) -> Owner:
    """--chown's uid and gid. An empty side of "user:group" is id 0, not a
    name to look up: BuildKit's llb.WithUser keeps an empty part as a
    UserOpt without a name, which it marshals as id 0, so ":grp" is 0:grp,
    "app:" is app's uid with gid 0 and ":" is 0:0."""
    user, sep, group = spec.partition(":")
    if sep:
        spec = f"{user or '0'}:{group or '0'}"
    return resolve_chown(rootfs, spec)


def copy_into(rootfs: Path, selection: Selection, dest: str, *, chown: str = "", chmod: str = "",
              parents: bool = False, unpack: bool = False, instruction: str = "COPY") -> None:
    """Copy a selection (from the context, a stage or an image) into `rootfs`.

    `dest` is absolute in the image (WORKDIR already joined); a trailing "/"
    means "into this directory". `unpack` is ADD's archive extraction.
    """
    owner, mode_fn, into_dir = _checked_options(rootfs, selection, dest, chown, chmod, instruction)
    if not selection.matches:
        return  # wildcards that matched nothing: BuildKit does nothing at all
    copier = _Copier(Path(rootfs), owner, mode_fn, selection.preserve_ownership)
    dest_clean = posixpath.normpath("/" + dest)
    dest_path = resolve_in_root(rootfs, dest_clean)
    if into_dir or parents or dest_clean == "/":
        copier.mkdir_all(dest_path)
    else:
        copier.mkdir_all(dest_path.parent)
    for match in selection.matches:
        if unpack and stat.S_ISREG(match.root.stat.st_mode) and archive.is_archive(match.root.path):
            copier.mkdir_all(dest_path)
            try:
                archive.extract(match.root.path, dest_path, owner=owner)
            except archive.ArchiveError as exc:
                raise CopyError(f"{instruction} failed: {match.name}: {exc}") from exc
            continue
        if parents:
            copier.copy_match_with_parents(match, dest_path, selection.tree)
        else:
            copier.copy_match(match, dest_path)


@dataclass(frozen=True)
class DirectCopy:
    """A COPY whose writes all land below one directory that the merged view
    shows empty: its files can be written straight into the new snapshot's
    upper directory, unmounted, instead of through overlayfs (where every
    create costs a copy-up check and copy_file_range fails with EXDEV). No
    lower entry can be shadowed there, so the upper ends up as overlay would
    have left it. `plan_direct` made the directory, through the mount."""

    dest_rel: str  # the destination directory, relative to the rootfs
    owner: Owner | None
    mode_fn: ModeFn | None
    preserve_ownership: bool

    def run(self, upper: Path, selection: Selection, reuse=None) -> None:
        """Copy `selection` into `upper` (the snapshot's fs, not mounted)."""
        target = resolve_in_root(upper, self.dest_rel, follow_final=False)
        if not stat.S_ISDIR(os.lstat(target).st_mode):  # lstat: never through a symlink
            raise CopyError(f"cannot copy to non-directory: /{self.dest_rel}")
        copier = _Copier(Path(upper), self.owner, self.mode_fn, self.preserve_ownership, reuse=reuse)
        for match in selection.matches:
            copier.copy_match(match, target)


def plan_direct(rootfs: Path, selection: Selection, dest: str, *, chown: str = "", chmod: str = "",
                parents: bool = False, unpack: bool = False, instruction: str = "COPY") -> DirectCopy | None:
    """On the mounted view: check what copy_into would, create the
    destination directory as it would, and return a DirectCopy when every
    write goes below that directory and the view shows it empty. None means
    "use copy_into on the view" (a file destination, ADD's archives,
    --parents, a destination with contents)."""
    owner, mode_fn, into_dir = _checked_options(rootfs, selection, dest, chown, chmod, instruction)
    if not selection.matches or unpack or parents:
        return None
    if not into_dir and not all(match.is_dir for match in selection.matches):
        return None  # a file copied to a file name: one create, through the view
    rootfs = Path(rootfs)
    copier = _Copier(rootfs, owner, mode_fn, selection.preserve_ownership)
    dest_path = resolve_in_root(rootfs, posixpath.normpath("/" + dest))
    if dest_path == rootfs:
        return None  # the root is never empty
    copier.mkdir_all(dest_path.parent)
    try:
        st = os.lstat(dest_path)
    except FileNotFoundError:
        copier.mkdir_all(dest_path)
    else:
        if not stat.S_ISDIR(st.st_mode):
            return None  # copy_into reports it
        with os.scandir(dest_path) as entries:
            if next(entries, None) is not None:
                return None  # lower entries to merge with: the view knows them
        # Make overlay copy the (empty) lower directory up now, as creating
        # the first file through the view would, so the upper has it with
        # its lower metadata. The probe is upper-only: no whiteout is left.
        probe = tempfile.mkstemp(prefix=".pybuild-", dir=dest_path)
        os.close(probe[0])
        os.unlink(probe[1])
    return DirectCopy(os.path.relpath(dest_path, rootfs), owner, mode_fn, selection.preserve_ownership)


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


def make_dir(rootfs: Path, path: str, *, user: str = "") -> Path:
    """WORKDIR: mkdir -p inside the rootfs; the directories it creates are
    owned by `user` (BuildKit passes the stage's USER), existing ones are
    left alone. Returns the host path."""
    owner = _resolve_owner(rootfs, user) if user else (0, 0)
    target = resolve_in_root(rootfs, posixpath.normpath("/" + path))
    _Copier(Path(rootfs), owner, None, False).mkdir_all(target)
    return target


# --chmod ------------------------------------------------------------------------

_SYMBOLIC_CLAUSE = re.compile(r"^([ugoa]*)((?:[-+=][rwxXst]*)+)$")
_OP_SPLIT = re.compile(r"([-+=])([rwxXst]*)")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o0007}


def parse_chmod(spec: str) -> ModeFn:
    """--chmod as a function of the source mode: octal (`0755`, at most
    07777) or chmod(1) symbolic clauses (`u+x,go-w`, `a=rX`)."""
    if re.fullmatch(r"[0-7]+", spec):
        value = int(spec, 8)
        if value > 0o7777:
            raise CopyError(f"invalid chmod parameter: '{spec}'. it should be octal string and between 0 and 07777")
        return lambda _mode: value
    clauses = []
    for text in spec.split(","):
        m = _SYMBOLIC_CLAUSE.match(text)
        if not m:
            raise CopyError(f"invalid chmod parameter: '{spec}'")
        who = m.group(1) or "a"
        clauses.append((who, _OP_SPLIT.findall(m.group(2))))

    def apply(mode: int) -> int:
        perm = stat.S_IMODE(mode)
        for who, ops in clauses:
            mask = 0
            for w in ("ugo" if "a" in who else who):
                mask |= _WHO_BITS[w]
            for op, perms in ops:
                bits = _perm_bits(perms, perm, stat.S_ISDIR(mode)) & mask
                if op == "+":
                    perm |= bits
                elif op == "-":
                    perm &= ~bits
                else:  # "=" clears the who bits, then sets
                    perm = (perm & ~mask) | bits
        return perm

    return apply


def _perm_bits(perms: str, current: int, is_dir: bool) -> int:
    bits = 0
    for p in perms:
        if p == "r":
            bits |= 0o444
        elif p == "w":
            bits |= 0o222
        elif p == "x":
            bits |= 0o111
        elif p == "X":
            # execute only for directories or files already executable by someone
            if is_dir or current & 0o111:
                bits |= 0o111
        elif p == "s":
            bits |= stat.S_ISUID | stat.S_ISGID
        elif p == "t":
            bits |= stat.S_ISVTX
    return bits


# the copier -----------------------------------------------------------------------

class _Copier:
    def __init__(self, rootfs: Path, owner: Owner | None, mode_fn: ModeFn | None, preserve_ownership: bool,
                 *, reuse=None):
        self.rootfs = rootfs
        self.owner = owner
        self.mode_fn = mode_fn
        self.preserve_ownership = preserve_ownership
        # builder.ops.copy_reuse.CopyReuse: files of an earlier result of
        # the same COPY that may be linked instead of copied.
        self.reuse = reuse
        self._links: dict[tuple[int, int], str] = {}  # (dev, ino) of a source -> its first copy

    # destination directories
    def mkdir_all(self, path: Path) -> None:
        """mkdir -p below the rootfs, never through a symlink: `path` comes
        from resolve_in_root, so a symlink met here was planted meanwhile."""
        rel = os.path.relpath(path, self.rootfs)
        if rel == ".":
            return
        if rel.startswith(".."):
            raise CopyError(f"destination escapes the root filesystem: {path}")
        current = self.rootfs
        for name in rel.split("/"):
            current = current / name
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)
                os.chmod(current, 0o755)  # no umask
                uid, gid = self.owner or (0, 0)
                os.chown(current, uid, gid, follow_symlinks=False)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise CopyError(f"cannot create directory {self._image_path(current)}: not a directory")

    # one match
    def copy_match(self, match: Match, dest_path: Path) -> None:
        # BuildKit runs one fsutil copy per source path and per wildcard
        # match, each with its own inode table: files hard-linked in the
        # source stay linked only when one match copies them all (a
        # directory), never across two sources of one COPY.
        self._links.clear()
        if match.is_dir:
            target = dest_path
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                self.mkdir_all(target)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise CopyError(f"cannot copy to non-directory: {self._image_path(target)}")
            # The destination directory itself keeps (or gets) mkdir's
            # metadata: BuildKit copies a directory's contents, not itself.
            self._copy_tree(match, target, copy_root_metadata=False)
            return
        try:
            dest_is_dir = stat.S_ISDIR(os.lstat(dest_path).st_mode)
        except FileNotFoundError:
            dest_is_dir = False
        target = dest_path / posixpath.basename(match.name) if dest_is_dir else dest_path
        self._copy_tree(match, target, copy_root_metadata=True)

    def copy_match_with_parents(self, match: Match, dest_path: Path, tree: Path) -> None:
        """--parents: the path below the pivot is kept; directories between
        `dest` and the match are copies of the source's directories."""
        self._links.clear()  # one inode table per match, as in copy_match
        parts = [p for p in match.parents_path.split("/") if p]
        current = dest_path
        source_dir = match.name[: len(match.name) - len(match.parents_path)].rstrip("/")
        dirs_made = []
        for name in parts[:-1]:
            source_dir = f"{source_dir}/{name}" if source_dir else name
            current = current / name
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                src_st = os.stat(resolve_in_root(tree, source_dir))
                os.mkdir(current, 0o700)
                dirs_made.append((current, src_st))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise CopyError(f"cannot copy to non-directory: {self._image_path(current)}")
        target = current / parts[-1] if parts else dest_path
        self._copy_tree(match, target, copy_root_metadata=bool(parts))
        for path, src_st in reversed(dirs_made):
            self._set_metadata(None, path, src_st, apply_chmod=False)

    def _copy_tree(self, match: Match, target: Path, *, copy_root_metadata: bool) -> None:
        pending_dirs: list[tuple[Entry, str]] = []
        base = os.fspath(target)
        for entry in match.entries:
            sub = match.subpath(entry)
            # Plain strings: a Path per entry costs more than the syscalls.
            dst = f"{base}/{sub}" if sub else base
            if stat.S_ISDIR(entry.stat.st_mode):
                self._make_dir_entry(dst)
                if sub or copy_root_metadata:
                    pending_dirs.append((entry, dst))
            else:
                self._copy_node(entry, dst)
        # Directories last and deepest first: adding children bumps a
        # directory's mtime, and a read-only mode would stop the copy.
        for entry, dst in reversed(pending_dirs):
            self._set_metadata(entry, dst, entry.stat)

    def _make_dir_entry(self, dst: str) -> None:
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            os.mkdir(dst, 0o700)
            return
        if not stat.S_ISDIR(st.st_mode):
            raise CopyError(f"cannot copy to non-directory: {self._image_path(dst)}")

    def _copy_node(self, entry: Entry, dst: str) -> None:
        st = entry.stat
        if self.reuse is not None and st.st_nlink == 1 and stat.S_ISREG(st.st_mode):
            if self._link_previous(entry, dst):
                return
        try:
            existing = os.lstat(dst)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise CopyError(f"cannot replace to directory {self._image_path(dst)} with file")
            os.unlink(dst)
            if self.reuse is not None:
                self.reuse.replaced(dst)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                try:
                    os.link(first, dst, follow_symlinks=False)
                    return  # same inode: its metadata is already set
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.ENOENT):
                        raise
            after = copy_file(entry.path, dst, st.st_size)
            if st.st_nlink > 1:
                self._links[key] = dst
            has_xattrs = self._set_metadata(entry, dst, st)
            if self.reuse is not None and st.st_nlink == 1 and not has_xattrs:
                self.reuse.copied(entry, dst, after)
            return
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry.path), dst)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dst, 0o600)
        elif stat.S_ISSOCK(mode):
            os.mknod(dst, stat.S_IFSOCK | 0o600)
        self._set_metadata(entry, dst, st)

    def _link_previous(self, entry: Entry, dst: str) -> bool:
        """Hard-link `dst` to the earlier result's file when that inode is
        exactly what copying `entry` would make: same content digest, and
        owner, mode, size and mtime checked on the inode itself. Snapshots
        are never written in place once made, so sharing is safe, and a
        layer tar never shows links between snapshots. False: copy it (also
        when `dst` exists already, which the normal path deals with)."""
        found = self.reuse.previous_file(entry, dst)
        if found is None:
            return False
        previous, rel = found
        try:
            have = os.lstat(previous)
        except FileNotFoundError:
            return False
        st = entry.stat
        uid, gid = self._owner_of(st)
        perm = self._perm_of(st)
        if not (stat.S_ISREG(have.st_mode) and stat.S_IMODE(have.st_mode) == perm and have.st_uid == uid
                and have.st_gid == gid and have.st_size == st.st_size and have.st_mtime_ns == st.st_mtime_ns):
            return False
        try:
            os.link(previous, dst, follow_symlinks=False)
        except OSError as exc:
            # ENOENT: the previous result was removed meanwhile.
            if exc.errno in (errno.EMLINK, errno.EXDEV, errno.EEXIST, errno.ENOENT):
                return False
            raise
        self.reuse.linked(rel)
        return True

    def _owner_of(self, st: os.stat_result) -> Owner:
        if self.owner is not None:
            return self.owner
        if self.preserve_ownership:
            return st.st_uid, st.st_gid
        return 0, 0

    def _perm_of(self, st: os.stat_result, apply_chmod: bool = True) -> int:
        return self.mode_fn(st.st_mode) if (self.mode_fn and apply_chmod) else stat.S_IMODE(st.st_mode)

    def _set_metadata(self, entry: Entry | None, dst: str | Path, st: os.stat_result, *,
                      apply_chmod: bool = True) -> bool:
        """Owner, then mode (chown clears setuid bits), xattrs (chown clears
        security.capability), then times (every other change bumps ctime only).
        Returns whether the source had xattrs to copy."""
        uid, gid = self._owner_of(st)
        os.chown(dst, uid, gid, follow_symlinks=False)
        is_link = stat.S_ISLNK(st.st_mode)
        if not is_link:
            os.chmod(dst, self._perm_of(st, apply_chmod))
        xattrs = read_xattrs(os.fspath(entry.path), skip_prefix=SKIP_XATTRS) if entry is not None else []
        if xattrs:
            for name, value in xattrs:
                try:
                    os.setxattr(dst, name, value, follow_symlinks=False)
                except OSError as exc:
                    # BuildKit logs and goes on: a trusted.* or security.*
                    # attribute the destination filesystem refuses is not fatal.
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        return bool(xattrs)

    def _image_path(self, path: Path) -> str:
        rel = os.path.relpath(path, self.rootfs)
        return "/" if rel == "." else "/" + rel
