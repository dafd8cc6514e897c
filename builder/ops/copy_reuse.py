"""A COPY from the context, rebuilt from its previous result.

One changed file gives a COPY a new cache key, and BuildKit copies every
selected file again. pybuild instead finds the previous result of the same
COPY (the same op on the same parent snapshots: its *lineage*) and
hard-links each file whose content digest, owner, mode, size and mtime are
unchanged; only new or changed files are copied, and removed ones are simply
not there. The result is the snapshot a full copy would make: directories
are always made anew, and a file is shared only when its inode is already
exactly what the copy would produce.

Why sharing inodes is safe: a snapshot's `fs` is never written once its op
is done. Later steps mount it as an overlay lower, and overlayfs copies a
file up into the new upper before any change; flattening hard-links lowers
into a scratch directory that is only read; removal unlinks. The layer tar
(runtime.layer) keys hard links by inode within one snapshot only, so links
between snapshots never show in a layer.

Each result keeps a note beside its `fs` (`note-copy-<lineage>`): the
destination directory and, for each regular file copied, its path below it
and content digest. Only files whose digest the stat cache held (so not
racy), whose source did not change while copied and with one link are
listed; anything else is copied next time. A context file's xattrs play no
part: COPY from the context writes none (builder/ops/copier.py). The note
goes with its snapshot, so GC needs no extra care.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
from pathlib import Path

from runtime.confine import Tree

NOTE_VERSION = "pybuild.copy-reuse.v1"


def note_name(op_canonical: dict, parent_chain: tuple[str, ...]) -> str:
    """The note a COPY's results carry: one per op and parent snapshots."""
    body = json.dumps({"op": op_canonical, "parent": list(parent_chain)}, sort_keys=True, separators=(",", ":"))
    return "note-copy-" + hashlib.sha256(body.encode()).hexdigest()[:40]


class CopyReuse:
    """What one COPY run may link from its previous result, and the note
    that it writes for the next one. Paths are relative to the COPY's
    destination directory; the previous result is read through
    runtime.confine, its directory fds kept while files come from one
    directory."""

    def __init__(self, snapshots, note: str, stat_cache):
        self._snapshots = snapshots
        self._note = note
        self._stat_cache = stat_cache
        self._previous_fs: Path | None = None
        self._previous_dest = ""
        self._previous: dict[str, str] = {}  # path below the destination -> digest
        self._tree: Tree | None = None
        self._dir: tuple[str, int] | None = None  # (path below the destination, fd) last read
        self._files: dict[str, str] = {}
        self.linked_count = 0

    def start(self, dest_rel: str) -> None:
        """Load the newest previous result's note with the same destination."""
        for snapshot in self._snapshots.with_note(self._note):
            try:
                with open(self._snapshots.note_path(snapshot, self._note), encoding="utf-8") as f:
                    note = json.load(f)
            except (OSError, ValueError):
                continue
            if note.get("version") != NOTE_VERSION or note.get("dest") != dest_rel:
                continue
            self._previous_fs = self._snapshots.fs_path(snapshot)
            self._previous_dest = dest_rel
            self._previous = note.get("files") or {}
            return

    def _digest(self, entry) -> str | None:
        digest = self._stat_cache.known_digest(entry.path, entry.stat)
        return None if digest is None else digest.hex

    def previous_file(self, entry, rel: str) -> tuple[int, bytes] | None:
        """(fd of the directory, name) of the previous result's file at
        `rel` if that file's content is the entry's; the caller checks the
        inode's metadata, and leaves the fd open (it is this object's)."""
        if not self._previous:
            return None
        digest = self._previous.get(rel)
        if digest is None or digest != self._digest(entry):
            return None
        parent, _, name = rel.rpartition("/")
        fd = self._dir_fd(parent)
        return None if fd is None else (fd, os.fsencode(name))

    def _dir_fd(self, parent: str) -> int | None:
        if self._dir is not None and self._dir[0] == parent:
            return self._dir[1]
        self._close_dir()
        try:
            if self._tree is None:
                self._tree = Tree(self._previous_fs)
            fd = self._tree.open_dir(posixpath.join(self._previous_dest, parent))
        except OSError:
            return None  # removed meanwhile: copy
        self._dir = (parent, fd)
        return fd

    def _close_dir(self) -> None:
        if self._dir is not None:
            os.close(self._dir[1])
            self._dir = None

    def close(self) -> None:
        """Done reading the previous result (save() closes too)."""
        self._close_dir()
        if self._tree is not None:
            self._tree.close()
            self._tree = None

    def linked(self, rel: str) -> None:
        """The file at `rel` was linked to what previous_file returned."""
        self._files[rel] = self._previous[rel]
        self.linked_count += 1

    def replaced(self, rel: str) -> None:
        """A later source overwrote `rel`: what was listed for it is gone."""
        self._files.pop(rel, None)

    def copied(self, entry, rel: str, after: os.stat_result) -> None:
        """`rel` was copied from `entry`; `after` is the source's fstat once
        copied. Listed only if the bytes copied are the ones hashed."""
        st = entry.stat
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino) != (
                st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return
        digest = self._digest(entry)
        if digest is not None:
            self._files[rel] = digest

    def save(self, snapshot: str, dest_rel: str) -> None:
        """Write the new result's note (atomically: a half-written note
        is never read)."""
        self.close()
        path = self._snapshots.note_path(snapshot, self._note)
        fd, tmp = tempfile.mkstemp(prefix=".note-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                # dumps, not dump: only dumps uses the C encoder (~5x faster here).
                f.write(json.dumps({"version": NOTE_VERSION, "dest": dest_rel, "files": self._files},
                                   separators=(",", ":")))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
