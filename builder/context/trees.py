"""Source trees read lazily: the build context, another stage, an image.

A COPY names paths in its source; only those are listed, hashed and copied,
never the whole context. The same code reads a stage's or an image's rootfs
for `COPY --from` (without ignore files, keeping ownership).

Path semantics follow BuildKit's file op (tonistiigi/fsutil `copy`):
- The tree is `/`. Source paths are cleaned against it, so `../x` and
  `/x` both mean `x` at the top of the tree and nothing is read outside.
- Wildcards (`*`, `?`, `[a-z]`, `[^a]`, `\\` escapes) are matched per
  path component, as patternmatcher reads them (see patterns.py): `*`
  never crosses a `/`.
- A path without wildcards that does not exist is an error. A wildcard that
  matches nothing is not (BuildKit sets AllowEmptyWildcard for COPY and ADD),
  but the part of the path before the first wildcard must exist, as in
  BuildKit where `COPY missing/*.txt /d/` fails to stat `missing`.
- The top-level source is followed when it is a symlink (FollowSymlinks, as
  the Dockerfile frontend asks), resolved as if the tree were `/`; symlinks
  inside a copied directory are copied as symlinks and never followed.
- `.dockerignore`d paths are invisible, exactly as if absent from the
  context: an excluded directory is only seen when a `!` exception
  re-includes something inside it, and then only that.
- `--exclude` patterns are matched (with .dockerignore syntax) against the
  path relative to each copied source, as fsutil matches them, and against a
  wildcard match's own path relative to the directory the wildcard is in, so
  `COPY --exclude=*.txt hom* /d/` leaves out `home.txt` as documented.

The checksum (see `BuildContext.checksum`) is pybuild's equivalent of
BuildKit's cache/contenthash: a digest of a normalised header per selected
entry plus its content digest. It holds: the path relative to the copied
source, the file type, the permission bits including setuid/setgid/sticky,
the size of regular files, a symlink's target, a device's numbers, for a
stage or image tree the xattrs (minus security.selinux, a host labelling
detail), and the sha256 of regular files' contents. It never holds atime/mtime/ctime, inode numbers or
host paths, so a fresh checkout on another machine hashes the same.

Ownership: BuildKit hashes uid/gid too. For the build context pybuild does
not: COPY writes context files as 0:0 (or the --chown owner) whatever their
host owner is (docker's context transfer resets uid/gid to 0), so the host
owner cannot change the result and must not change the key; a CI checkout
owned by uid 1001 hits the cache of a laptop checkout owned by uid 1000.
For a stage or image tree (`BuildContext.of_tree`) ownership is preserved
by COPY, so there uid/gid are part of the checksum.

xattrs: the same holds. docker's context transfer drops every xattr of a
context file (docker 26: user.*, trusted.*, security.capability), so COPY
from the context writes none and they are not in its checksum; a stage's
or an image's are copied and hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from builder.context.patterns import (
    PatternSet,
    clean_path,
    component_matchers,
    find_wildcard,
    split_wildcards,
)
from cache.digest import Digest
from cache.statcache import StatCache, hash_file
from frontend.errors import ContextError
from frontend.lexer import go_quote
from runtime.errors import RuntimeFailure
from runtime.fsutil import read_xattrs, resolve_in_root

CHECKSUM_VERSION = "pybuild.contenthash.v0"

# SELinux labels describe the host, not the content; BuildKit's context
# transfer drops them as well.
SKIP_XATTRS = ("security.selinux",)


class Entry(NamedTuple):
    """One file, directory, symlink... of a source tree."""

    relpath: str  # "/"-separated, relative to the tree root; "" is the root
    path: str  # its absolute host path (a str: a Path per entry costs more than the walk)
    stat: os.stat_result  # lstat: a symlink is described, not followed


@dataclass(frozen=True)
class Match:
    """What one source path (or one wildcard hit) names, and what it holds.

    `name` is the path as named (a symlink is not followed in it): its base
    name is the file name at the destination. `root` is what it resolves to;
    `entries` are `root` and, for a directory, its visible tree, sorted.
    `parents_path` is `name` relative to the `/./` pivot of the source (the
    whole `name` without a pivot), the path that `COPY --parents` keeps.
    """

    source: str
    name: str
    parents_path: str
    root: Entry
    entries: tuple[Entry, ...]

    def subpath(self, entry: Entry) -> str:
        """`entry`'s path relative to this match's root ("" for the root)."""
        if entry.relpath == self.root.relpath:
            return ""
        if not self.root.relpath:
            return entry.relpath
        return entry.relpath[len(self.root.relpath) + 1:]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.root.stat.st_mode)


@dataclass(frozen=True)
class Selection:
    """The result of `BuildContext.select`: one group of matches per source
    path, in the order the sources were given (a later one overwrites)."""

    tree: Path
    sources: tuple[str, ...]
    matches: tuple[Match, ...]
    preserve_ownership: bool = False
    _entries: tuple[Entry, ...] = field(default=(), repr=False, compare=False)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every selected entry once, sorted by relpath (parents first)."""
        return self._entries

    def __bool__(self) -> bool:
        return bool(self.matches)


class BuildContext:
    """A directory read as a source tree (see the module docstring).

    `excludes` are .dockerignore patterns; `stat_cache` spares re-reading
    unchanged files when hashing (None: always read).
    """

    def __init__(self, root: Path, excludes: Sequence[str] = (), stat_cache: StatCache | None = None,
                 *, preserve_ownership: bool = False, observer=None, remember: bool = False):
        self.root = Path(root).resolve()
        self.observer = observer  # builder.root.memo.Observer: what this build read, or None
        if not self.root.is_dir():
            raise ContextError(f"build context is not a directory: {root}")
        self.excludes = tuple(excludes)
        self.stat_cache = stat_cache
        self.preserve_ownership = preserve_ownership
        self._ignore = PatternSet(self.excludes)
        # `remember`: one build reads the context as it was when first
        # selected (as BuildKit's one transfer does): a COPY's key, its copy
        # and the --explain record see the same selection, walked once.
        self._selections: dict[tuple, Selection] | None = {} if remember else None

    @classmethod
    def of_tree(cls, root: Path, stat_cache: StatCache | None = None) -> "BuildContext":
        """Another stage's or an image's rootfs: no ignore file, and COPY keeps
        its owners (so they are hashed)."""
        return cls(root, (), stat_cache, preserve_ownership=True)

    # selection -----------------------------------------------------------
    def select(self, patterns: Sequence[str], *, excludes: Sequence[str] = (),
               follow_symlinks: bool = True) -> Selection:
        """Resolve COPY source paths; raises ContextError for a missing path."""
        memo_key = (tuple(patterns), tuple(excludes), follow_symlinks)
        if self._selections is not None and memo_key in self._selections:
            return self._selections[memo_key]
        exclude = PatternSet(tuple(excludes))
        matches: list[Match] = []
        for pattern in patterns:
            matches.extend(self._select_one(pattern, exclude, follow_symlinks))
        unique = {e.relpath: e for m in matches for e in m.entries}
        entries = tuple(unique[k] for k in sorted(unique))
        selection = Selection(self.root, tuple(patterns), tuple(matches), self.preserve_ownership, entries)
        if self._selections is not None:
            self._selections[memo_key] = selection
        return selection

    def _select_one(self, pattern: str, exclude: "PatternSet", follow: bool) -> list[Match]:
        pivot = ""
        if "/./" in pattern:
            before, _, after = pattern.partition("/./")
            pivot = clean_path(before)
            cleaned = clean_path(pivot + "/" + after)
        else:
            cleaned = clean_path(pattern)
        literal, wildcard = split_wildcards(cleaned)
        if not wildcard:
            match = self._match_path(pattern, cleaned, pivot, exclude, follow, from_wildcard_base=None)
            if match is None:
                raise self._not_found(cleaned)
            return [match]
        base = self._resolve(literal, follow=True)
        base_rel = self._rel(base)
        if self.observer is not None:
            self.observer.look_along(self.root, literal)
        try:
            base_st = os.lstat(base)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(cleaned) from None
        if not stat.S_ISDIR(base_st.st_mode) or not self._visible(base_rel, base, base_st):
            raise self._not_found(cleaned)
        matches = []
        for hit in find_wildcard(base, component_matchers(pattern, wildcard), observer=self.observer):
            name = posixpath.join(literal, hit) if literal else hit
            match = self._match_path(pattern, name, pivot, exclude, follow, from_wildcard_base=hit)
            if match is not None:
                matches.append(match)
        return matches

    def _match_path(self, pattern: str, name: str, pivot: str, exclude: "PatternSet", follow: bool,
                    from_wildcard_base: str | None) -> Match | None:
        if from_wildcard_base is not None and exclude.excluded(from_wildcard_base):
            return None
        if name != "" and self._ignore.excluded(name) and not self._ignore.may_reinclude_below(name):
            return None  # an ignored path (or symlink) is absent from the context
        real = self._resolve(name, follow=follow)
        if self.observer is not None:
            self.observer.look_along(self.root, name)
            self.observer.look(real)
        try:
            st = os.lstat(real)
        except (FileNotFoundError, NotADirectoryError):
            return None
        real_rel = self._rel(real)
        root = Entry(real_rel, os.fspath(real), st)
        if stat.S_ISDIR(st.st_mode):
            below = tuple(self._walk(real_rel, real, exclude))
            if self._ignore.excluded(real_rel) and not below:
                return None  # an ignored directory nothing re-includes
            entries = (root, *below)
        else:
            if self._ignore.excluded(real_rel):
                return None
            entries = (root,)
        if pivot and not (name == pivot or name.startswith(pivot + "/")):
            raise ContextError(f"COPY --parents: {pattern} is not below its pivot {pivot}")
        parents_path = name[len(pivot):].lstrip("/") if pivot else name
        return Match(pattern, name, parents_path, root, entries)

    def _walk(self, rel_dir: str, abs_dir: str | Path, exclude: "PatternSet") -> list[Entry]:
        """The visible tree below a directory, sorted, symlinks not followed.
        Depth first with an explicit stack: an image's tree may be deeper
        than Python's recursion limit."""
        out: list[Entry] = []
        observer = self.observer
        # Per directory being walked: its sorted children left, its relpath,
        # its path relative to the walk's top (what `exclude` matches), and
        # for the ones below the top (where its entry sits in `out`, whether
        # it only stays with something below it, its path, its lstat).
        stack = [(self._children(abs_dir), rel_dir, "", None)]
        while stack:
            children, rel_dir, sub_dir, placed = stack[-1]
            for child in children:
                rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
                sub = f"{sub_dir}/{child.name}" if sub_dir else child.name
                st = child.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                if exclude.excluded(sub) and not (is_dir and exclude.may_reinclude_below(sub)):
                    continue
                ignored = self._ignore.excluded(rel)
                if ignored and not (is_dir and self._ignore.may_reinclude_below(rel)):
                    continue  # pruned: nothing below can come back
                conditional = ignored or exclude.excluded(sub)
                path = child.path
                if is_dir:
                    out.append(Entry(rel, path, st))
                    stack.append((self._children(path), rel, sub, (len(out) - 1, conditional, path, st)))
                    break  # its entries next; this loop resumes where it left off
                if conditional:
                    continue
                out.append(Entry(rel, path, st))
                if observer is not None:
                    observer.saw(path, st)
            else:
                stack.pop()
                if placed is not None:
                    at, conditional, path, st = placed
                    if conditional and len(out) == at + 1:
                        del out[at]  # excluded, and nothing below it came back
                    elif observer is not None:
                        observer.saw(path, st)
        return out

    def _children(self, path: str | Path):
        if self.observer is not None:
            self.observer.look(path)  # its times change when an entry is added, removed or renamed
        with os.scandir(path) as it:
            return iter(sorted(it, key=lambda d: d.name))

    def _not_found(self, cleaned: str) -> ContextError:
        """BuildKit's two errors for a source that is not there: its
        checksum's `"/a/b": not found` when the directory holding it is
        there, and the `lstat` of the first missing (or ignored) directory
        on the way when it is not (both for the context and a stage); the
        second says both."""
        parts = cleaned.split("/")
        for i in range(1, len(parts)):
            ancestor = "/".join(parts[:i])
            try:
                path = self._resolve(ancestor, follow=True)
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode) or not self._visible(self._rel(path), path, st):
                return ContextError(f"failed to calculate checksum: {go_quote('/' + cleaned)}: not found: "
                                    f"lstat /{ancestor}: no such file or directory")
        return ContextError(f"failed to calculate checksum: {go_quote('/' + cleaned)}: not found")

    def _visible(self, rel: str, path: Path, st: os.stat_result) -> bool:
        if not rel or not self._ignore.excluded(rel):
            return True
        if not stat.S_ISDIR(st.st_mode) or not self._ignore.may_reinclude_below(rel):
            return False
        return bool(self._walk(rel, path, PatternSet(())))

    def _resolve(self, rel: str, *, follow: bool) -> Path:
        try:
            return resolve_in_root(self.root, rel, follow_final=follow)
        except RuntimeFailure as exc:  # a symlink loop in the context
            raise ContextError(f"COPY failed: {exc}") from exc

    def _rel(self, path: Path) -> str:
        rel = os.path.relpath(path, self.root)
        return "" if rel == "." else rel

    # checksum ------------------------------------------------------------
    def checksum(self, selection: Selection, *, ignore_mode: bool = False) -> Digest:
        """The content checksum of a selection (see the module docstring).

        `ignore_mode`: leave permission bits out, for a COPY whose octal
        --chmod replaces them all, so a different umask on another machine
        still hits the cache (BuildKit hashes them anyway: buildkit#3821)."""
        h = hashlib.sha256()
        h.update(CHECKSUM_VERSION.encode() + b"\n")
        digest_of = self._content_digest
        if self.stat_cache is not None:
            self.stat_cache.preload(self.root)
            with self.stat_cache.batch():
                self._feed(h, selection, digest_of, ignore_mode)
        else:
            self._feed(h, selection, digest_of, ignore_mode)
        return Digest("sha256", h.hexdigest())

    def _feed(self, h, selection: Selection, digest_of: Callable[[Entry], str], ignore_mode: bool = False) -> None:
        # Matches in source order: a later source overwrites an earlier one at
        # the destination, so order is part of the result.
        for index, match in enumerate(selection.matches):
            h.update(_line(["match", index, match.source, match.name, match.parents_path]))
            for entry in match.entries:
                record = _header(match.subpath(entry), entry, selection.preserve_ownership, digest_of)
                if ignore_mode:
                    record[2] = None
                h.update(_line(record))

    def _content_digest(self, entry: Entry) -> str:
        if self.stat_cache is not None:
            return str(self.stat_cache.file_digest(entry.path, entry.stat))
        digest, _ = hash_file(entry.path)
        return str(digest)


def _header(sub: str, entry: Entry, with_owner: bool, digest_of: Callable[[Entry], str]) -> list:
    st = entry.stat
    mode = st.st_mode
    kind = _kind(mode)
    record = [sub, kind, stat.S_IMODE(mode)]
    if kind == "file":
        record += [st.st_size, digest_of(entry)]
    elif kind == "symlink":
        record.append(os.readlink(entry.path))
    elif kind in ("char", "block"):
        record += [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if with_owner:
        # A tree's owners and xattrs are copied; the context's are not.
        record += [st.st_uid, st.st_gid]
        xattrs = read_xattrs(os.fspath(entry.path), skip_prefix=SKIP_XATTRS)
        if xattrs:
            record.append([[name, hashlib.sha256(value).hexdigest()] for name, value in xattrs])
    return record


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "socket"


# One encoder for every line: json.dumps with options builds a new one per
# call, a third of the cost of a line.
_LINE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _line(record: list) -> bytes:
    return _LINE_ENCODER.encode(record).encode("utf-8", "surrogateescape") + b"\n"
