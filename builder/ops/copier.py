"""The copier under COPY, ADD, COPY <<EOF and WORKDIR (builder/ops/copy.py,
which states the semantics): matches copied entry by entry into one
confined Tree, hard links kept, metadata set, an earlier result reused."""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path
from typing import NamedTuple

from builder.context.trees import Entry, Match
from builder.ops.copy_options import CopyError, ModeFn, Owner
from runtime.confine import DirStack, Tree, set_fd_metadata, set_metadata
from runtime.fsutil import copy_data, read_xattrs

SKIP_XATTRS = ("security.selinux",)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Copier:
    """Writes into one confined Tree. Destinations are resolved once, inside
    the tree (runtime.confine); below them every entry is made relative to
    its parent directory's fd, never following a name (O_NOFOLLOW|O_EXCL,
    follow_symlinks=False), and its metadata is set through its own fd."""

    def __init__(self, tree: Tree, owner: Owner | None, mode_fn: ModeFn | None, preserve_ownership: bool,
                 *, reuse=None):
        self.tree = tree
        self.owner = owner
        self.mode_fn = mode_fn
        self.preserve_ownership = preserve_ownership
        # builder.ops.copy_reuse.CopyReuse: files of an earlier result of
        # the same COPY that may be linked instead of copied.
        self.reuse = reuse
        self._links: dict[tuple[int, int], str] = {}  # (dev, ino) of a source -> image path of its first copy

    # destinations
    def make_dirs(self, path: str) -> int:
        """mkdir -p inside the tree: created directories 0755, owned by the
        --chown owner or root (BuildKit's MkdirAll)."""
        return self.tree.make_dirs(path, mode=0o755, owner=self.owner or (0, 0))

    def make_target_parent(self, path: str) -> tuple[int, bytes]:
        return self.tree.make_target_parent(path, mode=0o755, owner=self.owner or (0, 0))

    def existing_dir(self, path: str) -> int | None:
        """An fd of the directory `path` leads to inside the tree, if it is one."""
        try:
            return self.tree.open_dir(path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def make_dir_at(self, parent_fd: int, name: bytes) -> int:
        """The directory `name` in `parent_fd`, made as make_dirs would when absent."""
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            return self._open_dir(parent_fd, name)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        os.fchmod(fd, 0o755)  # no umask
        os.fchown(fd, *(self.owner or (0, 0)))
        return fd

    def host_path(self, fd: int) -> str:
        """The host path of a directory fd of the tree, for code that takes
        paths (ADD's archive extraction confines itself below it)."""
        return os.path.join(self.tree.path, self.tree.image_path_of(fd).lstrip("/"))

    # one match
    def copy_match_into(self, match: Match, dir_fd: int) -> None:
        """A match into the directory `dir_fd`: a directory's contents, or a
        file under its own base name."""
        # BuildKit runs one fsutil copy per source path and per wildcard
        # match, each with its own inode table: files hard-linked in the
        # source stay linked only when one match copies them all (a
        # directory), never across two sources of one COPY.
        self._links.clear()
        if match.is_dir:
            # The destination directory itself keeps (or gets) mkdir's
            # metadata: BuildKit copies a directory's contents, not itself.
            self._copy_tree(match, dir_fd, None, copy_root_metadata=False, rel="")
        else:
            name = posixpath.basename(match.name)
            self._copy_tree(match, dir_fd, os.fsencode(name), copy_root_metadata=True, rel=name)

    def copy_match_to(self, match: Match, parent_fd: int, name: bytes) -> None:
        """A match to the name `name` in `parent_fd` (which is no directory
        yet): a directory's contents into a new directory there, or the file."""
        self._links.clear()
        if match.is_dir:
            fd = self.make_dir_at(parent_fd, name)
            try:
                self._copy_tree(match, fd, None, copy_root_metadata=False, rel="")
            finally:
                os.close(fd)
        else:
            self._copy_tree(match, parent_fd, name, copy_root_metadata=True, rel=os.fsdecode(name))

    def copy_match_with_parents(self, match: Match, dest_fd: int, source_tree: Path) -> None:
        """--parents: the path below the pivot is kept; directories between
        `dest` and the match are copies of the source's directories."""
        self._links.clear()  # one inode table per match, as in copy_match_into
        parts = [p for p in match.parents_path.split("/") if p]
        source_dir = match.name[: len(match.name) - len(match.parents_path)].rstrip("/")
        opened: list[int] = []
        made: list[tuple[int, os.stat_result]] = []
        current = dest_fd
        try:
            with Tree(source_tree) as source:
                for name in parts[:-1]:
                    source_dir = f"{source_dir}/{name}" if source_dir else name
                    raw = os.fsencode(name)
                    try:
                        os.mkdir(raw, 0o700, dir_fd=current)
                    except FileExistsError:
                        current = self._open_dir(current, raw)
                        opened.append(current)
                        continue
                    current = os.open(raw, _DIR_FLAGS, dir_fd=current)
                    opened.append(current)
                    made.append((current, _source_stat(source, source_dir)))
            if parts:
                self._copy_tree(match, current, os.fsencode(parts[-1]), copy_root_metadata=True, rel="")
            else:
                self._copy_tree(match, current, None, copy_root_metadata=False, rel="")
            for fd, src_st in reversed(made):
                self._set_fd_metadata(fd, None, src_st, apply_chmod=False)
        finally:
            for fd in opened:
                os.close(fd)

    def _copy_tree(self, match: Match, parent_fd: int, name: bytes | None, *, copy_root_metadata: bool,
                   rel: str) -> None:
        """The match's entries at `name` in `parent_fd` (None: into
        `parent_fd` itself, which must then be a directory match). `rel` is
        where that lands below the copy's destination, for the reuse note."""
        entries = match.entries
        root = entries[0]
        if not stat.S_ISDIR(root.stat.st_mode):
            if name is None:
                raise CopyError(f"cannot replace to directory {self._image_path(parent_fd)} with file")
            self._copy_node(root, parent_fd, name, rel)
            return
        top = os.dup(parent_fd) if name is None else self._make_dir_entry(parent_fd, name)
        # Directories from the copy's top down to the current entry's
        # parent, each with (its path below the match root, the entry whose
        # metadata to set on leaving it), on a DirStack: a tree thousands of
        # levels deep holds a bounded number of fds. Directories get their
        # metadata last and deepest first: adding children bumps a
        # directory's mtime, and a read-only mode would stop the copy.
        # A directory's contents copied into an existing or new directory
        # leave that directory its owner and mode, but give it the source
        # directory's times (docker 26: `COPY dir /d/` and a merge into
        # an existing /etc/app both show dir's mtime). The build context's
        # own root is the exception: the transfer never sends it, BuildKit's
        # copy of it is made on arrival, so `COPY . /ctx/` leaves /ctx new.
        if copy_root_metadata:
            top_data = root
        elif root.relpath == "" and not self.preserve_ownership:
            top_data = None
        else:
            top_data = _TimesOf(root)
        stack = DirStack(top, ("", top_data))
        made: dict[str, Entry] = {}
        prefix = f"{rel}/" if rel else ""
        try:
            for entry in entries[1:]:
                sub = match.subpath(entry)
                parent, _, leaf = sub.rpartition("/")
                dir_fd = self._enter(stack, parent, made)
                raw = os.fsencode(leaf)
                if stat.S_ISDIR(entry.stat.st_mode):
                    stack.push(self._make_dir_entry(dir_fd, raw), (sub, entry))
                    made[sub] = entry
                else:
                    self._copy_node(entry, dir_fd, raw, prefix + sub)
            while stack:
                self._leave(stack)
        finally:
            stack.close()

    def _enter(self, stack: DirStack, parent: str, made: dict[str, Entry]) -> int:
        """The fd of the directory `parent` (below the match root), leaving
        the directories on the stack that do not hold it."""
        while len(stack) > 1 and not (parent == stack.data[0] or parent.startswith(stack.data[0] + "/")):
            self._leave(stack)
        here = stack.data[0]
        if parent != here:
            # Entries come depth first, so this is only reached for an order
            # that returns to a directory already left: open it again.
            below = parent[len(here) + 1:] if here else parent
            for part in below.split("/"):
                here = f"{here}/{part}" if here else part
                stack.push(self._open_dir(stack.fd, os.fsencode(part)), (here, made.get(here)))
        return stack.fd

    def _leave(self, stack: DirStack) -> None:
        fd, (_, entry) = stack.pop()
        try:
            if isinstance(entry, _TimesOf):
                st = entry.entry.stat
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            elif entry is not None:
                self._set_fd_metadata(fd, entry, entry.stat)
        finally:
            os.close(fd)

    def _make_dir_entry(self, dir_fd: int, name: bytes) -> int:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            return self._open_dir(dir_fd, name)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)

    def _open_dir(self, dir_fd: int, name: bytes) -> int:
        """An existing directory to merge into; a symlink or file there is an
        error, as in BuildKit, never followed."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        raise CopyError(f"cannot copy to non-directory: {self._image_path(dir_fd, name)}")

    def _copy_node(self, entry: Entry, dir_fd: int, name: bytes, rel: str) -> None:
        st = entry.stat
        mode = st.st_mode
        if stat.S_ISREG(mode):
            if self.reuse is not None and st.st_nlink == 1 and self._link_previous(entry, dir_fd, name, rel):
                return
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                first = self._links.get(key)
                if first is not None and self._link_first(first, dir_fd, name, rel):
                    return  # same inode: its metadata is already set
            src = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                dst = self._create(dir_fd, name, rel, lambda: os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd))
                try:
                    copy_data(src, dst, st.st_size)
                    after = os.fstat(src)
                    has_xattrs = self._set_fd_metadata(dst, entry, st)
                finally:
                    os.close(dst)
            finally:
                os.close(src)
            if st.st_nlink > 1:
                self._links[key] = self._image_path(dir_fd, name)
            if self.reuse is not None and st.st_nlink == 1 and not has_xattrs:
                self.reuse.copied(entry, rel, after)
            return
        if stat.S_ISLNK(mode):
            target = os.readlink(os.fsencode(entry.path))
            self._create(dir_fd, name, rel, lambda: os.symlink(target, name, dir_fd=dir_fd))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self._create(dir_fd, name, rel,
                         lambda: os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dir_fd))
        elif stat.S_ISFIFO(mode):
            self._create(dir_fd, name, rel, lambda: os.mkfifo(name, 0o600, dir_fd=dir_fd))
        elif stat.S_ISSOCK(mode):
            self._create(dir_fd, name, rel, lambda: os.mknod(name, stat.S_IFSOCK | 0o600, dir_fd=dir_fd))
        else:
            return
        uid, gid = self._owner_of(st)
        perm = None if stat.S_ISLNK(mode) else self._perm_of(st)
        # BuildKit logs and goes on: a trusted.* or security.* attribute the
        # destination filesystem refuses is not fatal.
        xattrs = self._xattrs_of(entry)
        set_metadata(dir_fd, name, uid=uid, gid=gid, mode=perm, xattrs=xattrs, skip_refused_xattrs=True,
                     atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns)

    def _create(self, dir_fd: int, name: bytes, rel: str, make):
        """`make()` a new entry `name`; what is already there (a file or a
        symlink, never followed) is replaced, a directory is an error."""
        try:
            return make()
        except FileExistsError:
            pass
        if stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise CopyError(f"cannot replace to directory {self._image_path(dir_fd, name)} with file")
        os.unlink(name, dir_fd=dir_fd)
        if self.reuse is not None:
            self.reuse.replaced(rel)
        return make()

    def _link_first(self, first: str, dir_fd: int, name: bytes, rel: str) -> bool:
        """Hard-link `name` to the first copy of the same source inode."""
        try:
            src_fd, src_name = self.tree.parent(first)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            self._create(dir_fd, name, rel, lambda: os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dir_fd,
                                                            follow_symlinks=False))
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.ENOENT):
                raise
            return False
        finally:
            os.close(src_fd)
        return True

    def _link_previous(self, entry: Entry, dir_fd: int, name: bytes, rel: str) -> bool:
        """Hard-link `name` to the earlier result's file when that inode is
        exactly what copying `entry` would make: same content digest, and
        owner, mode, size and mtime checked on the inode itself. Snapshots
        are never written in place once made, so sharing is safe, and a
        layer tar never shows links between snapshots. False: copy it (also
        when `name` exists already, which the normal path deals with)."""
        found = self.reuse.previous_file(entry, rel)
        if found is None:
            return False
        previous_dir, previous_name = found
        try:
            have = os.lstat(previous_name, dir_fd=previous_dir)
        except FileNotFoundError:
            return False
        st = entry.stat
        uid, gid = self._owner_of(st)
        perm = self._perm_of(st)
        if not (stat.S_ISREG(have.st_mode) and stat.S_IMODE(have.st_mode) == perm and have.st_uid == uid
                and have.st_gid == gid and have.st_size == st.st_size and have.st_mtime_ns == st.st_mtime_ns):
            return False
        try:
            os.link(previous_name, name, src_dir_fd=previous_dir, dst_dir_fd=dir_fd, follow_symlinks=False)
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

    def _set_fd_metadata(self, fd: int, entry: Entry | None, st: os.stat_result, *, apply_chmod: bool = True
                         ) -> bool:
        """Owner, then mode (chown clears setuid bits), xattrs (chown clears
        security.capability), then times (every other change bumps ctime
        only), all through the new file's or directory's own fd. Returns
        whether the source had xattrs to copy."""
        uid, gid = self._owner_of(st)
        xattrs = self._xattrs_of(entry) if entry is not None else []
        set_fd_metadata(fd, uid=uid, gid=gid, mode=self._perm_of(st, apply_chmod), xattrs=xattrs,
                        skip_refused_xattrs=True, atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns)
        return bool(xattrs)

    def _xattrs_of(self, entry: Entry) -> list:
        # A stage's or an image's file keeps its xattrs (BuildKit's copy
        # does); the build context's lose them all on the way, as docker's
        # context transfer drops them (docker 26: user.*, trusted.* and
        # security.capability of context files never reach the image).
        return read_xattrs(entry.path, skip_prefix=SKIP_XATTRS) if self.preserve_ownership else []

    def _image_path(self, dir_fd: int, name: bytes | None = None) -> str:
        base = self.tree.image_path_of(dir_fd)
        if name is None:
            return base
        return posixpath.join(base, os.fsdecode(name))


class _TimesOf(NamedTuple):
    """A destination directory that takes only the times of `entry`."""

    entry: Entry


def _source_stat(source: Tree, path: str) -> os.stat_result:
    """stat of a source directory, symlinks followed inside the source tree."""
    fd = source.open(path, os.O_PATH)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
