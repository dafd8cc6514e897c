"""Snapshot directories in overlay upperdir form, handled without overlayfs:
merged as overlay would show them (a flattened lower, the copy
snapshotter's view), and a changed view written back as an upperdir (the
copy snapshotter's diff)."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from typing import Iterator, Sequence

from runtime.fsutil import copy_metadata, copy_node, remove_tree
from runtime.whiteouts import OPAQUE_XATTR, OVERLAY_XATTR_PREFIXES, XATTR_NAMESPACE, is_whiteout

_OVERLAY_XATTRS = OVERLAY_XATTR_PREFIXES
# CopySnapshotter's tag on its copies (see mark); never leaves the view.
_MARK = XATTR_NAMESPACE + "pybuild.path"
# What a step may have set in the view (in a user namespace both are user.*
# xattrs it can write) and must not become a mark in the diff: overlayfs
# refuses a step its own xattrs, and a layer carries none.
_NOT_COPIED = (_MARK, *OVERLAY_XATTR_PREFIXES)
# Each tag starts with this process's nonce: a tag a step wrote itself is
# told from pybuild's (the step's view shows pybuild's, so a step bent on
# it can still forge one: it then only changes its own layer).
_NONCE = os.urandom(8).hex() + ":"


def merge_layers(dest: str, layers: Sequence[str], *, link_files: bool) -> None:
    """Apply snapshot directories (upperdir form, bottom to top) onto `dest`
    as overlay would show them: whiteouts delete, opaque directories hide
    what was below. With link_files, files are hardlinked from the layers
    (for read-only use only); otherwise copied, hardlinks within a layer kept.
    The result carries no overlay xattrs and no whiteouts."""
    for layer in layers:
        _merge_dir(layer, dest, link_files, {})
        copy_metadata(layer, dest, os.lstat(layer), skip_xattrs=_OVERLAY_XATTRS)


def _merge_dir(src: str, dst: str, link_files: bool, links: dict) -> None:
    # Depth first with an explicit stack (a layer may be thousands of
    # directories deep); a directory's metadata once its entries are in.
    stack = [(src, dst, iter(os.listdir(src)), None)]
    while stack:
        src_dir, dst_dir, names, done = stack[-1]
        for name in names:
            src_path = os.path.join(src_dir, name)
            dst_path = os.path.join(dst_dir, name)
            st = os.lstat(src_path)
            existing = _lstat_or_none(dst_path)
            if is_whiteout(st):
                if existing is not None:
                    remove_tree(dst_path)
                continue
            if stat.S_ISDIR(st.st_mode):
                if existing is not None and (not stat.S_ISDIR(existing.st_mode) or _is_opaque(src_path)):
                    remove_tree(dst_path)
                    existing = None
                if existing is None:
                    os.mkdir(dst_path, 0o700)
                stack.append((src_path, dst_path, iter(os.listdir(src_path)), (src_path, dst_path, st)))
                break  # its entries next; this loop resumes where it left off
            if existing is not None:
                remove_tree(dst_path)
            if link_files:
                os.link(src_path, dst_path, follow_symlinks=False)
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], dst_path, follow_symlinks=False)
                continue
            copy_node(src_path, dst_path, st, skip_xattrs=_OVERLAY_XATTRS)
            if st.st_nlink > 1:
                links[key] = dst_path
        else:
            stack.pop()
            if done is not None:
                copy_metadata(*done, skip_xattrs=_OVERLAY_XATTRS)


# ---------------------------------------------------------------- diffing


def walk(top: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under `top`, parents first,
    each directory's entries sorted; iterative, for trees of any depth."""
    stack = [_sorted_entries(top, "")]
    while stack:
        found = next(stack[-1], None)
        if found is None:
            stack.pop()
            continue
        rel, st = found
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(_sorted_entries(top, rel))


def _sorted_entries(top: str, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    with os.scandir(os.path.join(top, rel) if rel else top) as entries:
        children = [(entry.name, entry.stat(follow_symlinks=False)) for entry in entries]
    return iter([(f"{rel}/{name}" if rel else name, st) for name, st in sorted(children)])


def index(top: str) -> dict[str, bool]:
    """Every path under `top` -> is it a directory."""
    return {rel: stat.S_ISDIR(st.st_mode) for rel, st in walk(top)}


def write_diff(merged: str, diff: str, lower_view, before, upper_fs: str, upper_entries) -> None:
    """Write into the empty `diff` the upperdir that turns the lowers'
    merged view (`lower_view`) into the current `merged` directory."""
    links: dict = {}
    foreign: dict[str, str] = {}
    opaque: set[str] = set()
    written_dirs: list[str] = []
    current: set[str] = set()
    current_dirs: set[str] = {""}

    def ensure_parents(rel: str) -> None:
        missing = []
        parent = os.path.dirname(rel)
        while parent and not os.path.isdir(os.path.join(diff, parent)):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for parent in reversed(missing):
            os.mkdir(os.path.join(diff, parent), 0o700)
            written_dirs.append(parent)

    for rel, st in walk(merged):
        current.add(rel)
        old = before.get(rel)
        taggable = stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
        tag = _marked_as(os.path.join(merged, rel)) if taggable else None
        if tag is not None and tag.startswith(_NONCE):
            marked = _is_tagged_for(tag[len(_NONCE):], rel, st, before)
        elif taggable and tag is None:
            marked = False  # new: mark() tagged every file and directory it found
        else:
            if tag is not None:
                foreign[rel] = tag  # the step's own xattr: the layer keeps it
            # Symlinks and devices are untagged: their inode must do. So it
            # must for a tag a step wrote over pybuild's (a user.* xattr in
            # a user namespace) on the file found there; a reused inode has
            # no tag at all.
            marked = old is not None and old[0] == st.st_ino
        # Below a directory found replaced nothing of the lowers shows:
        # everything there is written, whatever its tag claims.
        changed = not marked or old != (st.st_ino, st.st_ctime_ns) or _under_any(os.path.dirname(rel), opaque)
        from_upper = rel in upper_entries and not is_whiteout(upper_entries[rel])
        src = os.path.join(merged, rel)
        dst = os.path.join(diff, rel)
        if stat.S_ISDIR(st.st_mode):
            current_dirs.add(rel)
            same_dir = marked
            # A lower directory deleted and made anew: nothing of the old one
            # may show through. An opaque directory of the upper stays so.
            replaced = lower_view.get(rel) is True and not same_dir
            kept_opaque = from_upper and same_dir and _is_opaque(os.path.join(upper_fs, rel))
            if replaced or kept_opaque:
                opaque.add(rel)
            if changed or from_upper or rel in opaque:
                ensure_parents(rel)
                os.mkdir(dst, 0o700)
                written_dirs.append(rel)
                if rel in opaque:
                    os.setxattr(dst, OPAQUE_XATTR, b"y")
            continue
        if not changed and not from_upper:
            continue
        ensure_parents(rel)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(links[key], dst, follow_symlinks=False)
            continue
        copy_node(src, dst, st, skip_xattrs=_NOT_COPIED)
        if st.st_nlink > 1:
            links[key] = dst

    # Deletions: a lower path gone from the view gets a whiteout, unless
    # something above already hides it: a deleted parent (whiteout itself),
    # a parent that is no directory any more, or an opaque parent.
    for rel in sorted(lower_view):
        parent = os.path.dirname(rel)
        if rel in current or parent not in current_dirs or _under_any(parent, opaque):
            continue
        ensure_parents(rel)
        os.mknod(os.path.join(diff, rel), stat.S_IFCHR, 0)

    # Directory metadata last, deepest first, so adding entries does not
    # disturb the times just set.
    for rel in sorted(set(written_dirs), key=lambda r: r.count("/"), reverse=True):
        path = os.path.join(merged, rel)
        copy_metadata(path, os.path.join(diff, rel), os.lstat(path), skip_xattrs=_NOT_COPIED)
    copy_metadata(merged, diff, os.lstat(merged), skip_xattrs=_NOT_COPIED)
    for rel, tag in foreign.items():
        path = os.path.join(diff, rel)
        if os.path.lexists(path):  # setxattr leaves mtime as copied
            os.setxattr(path, _MARK, tag.encode("utf-8", "surrogateescape"), follow_symlinks=False)


def mark(top: str) -> dict[str, tuple[int, int]]:
    """Tag each directory and regular file of a fresh copy with its path,
    and return every entry's (inode, ctime).

    Inode numbers are reused as soon as freed (rm -rf d; mkdir d may give d
    its old number back), so identity is the tag, which a new or moved file
    lacks or has wrong. Content and metadata changes show in ctime; the wait
    at the end makes sure any later change gets a strictly later ctime than
    the coarse clock gave the copies.
    """
    before = {}
    latest = 0
    tagged: set[tuple[int, int]] = set()
    for rel, st in walk(top):
        path = os.path.join(top, rel)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            # A file with hardlinks is one inode: it keeps the tag of its
            # first name (tagging the next would change the first's tag and
            # ctime), and every name reads the ctime that tag gave it.
            if (st.st_dev, st.st_ino) not in tagged:
                os.setxattr(path, _MARK, (_NONCE + rel).encode("utf-8", "surrogateescape"), follow_symlinks=False)
                tagged.add((st.st_dev, st.st_ino))
            st = os.lstat(path)
        before[rel] = (st.st_ino, st.st_ctime_ns)
        latest = max(latest, st.st_ctime_ns)
    # The probe lives beside `top`, not in it: it must not touch the view.
    probe = tempfile.mktemp(prefix=".tick-", dir=os.path.dirname(top))
    while True:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        now = os.lstat(probe).st_ctime_ns
        os.unlink(probe)
        if now > latest:
            return before
        time.sleep(0.001)


def _is_tagged_for(tag: str | None, rel: str, st: os.stat_result, before: dict) -> bool:
    """Whether the file now at `rel` is the one `mark` found there: its tag
    names `rel`, or (hardlinks sharing one tag) names another path that was
    the same inode as `rel`, which it still is."""
    if tag == rel:
        return True
    old, named = before.get(rel), before.get(tag) if tag is not None else None
    return old is not None and named is not None and named[0] == old[0] == st.st_ino


def _marked_as(path: str) -> str | None:
    try:
        return os.getxattr(path, _MARK, follow_symlinks=False).decode("utf-8", "surrogateescape")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _under_any(path: str, dirs: set[str]) -> bool:
    while path:
        if path in dirs:
            return True
        path = os.path.dirname(path)
    return False


def _lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
