"""A persistent stat cache: file content digests keyed by what `stat` says.

Hashing a build context is the cost of every build, cached or not. A file
whose (size, mtime_ns, ctime_ns, inode, device) are unchanged since we last
hashed it is taken to have unchanged content, as git's index does, so an
unchanged context is hashed with one `lstat` and one sqlite lookup per file.

ctime is part of the key on purpose: a tool that rewrites a file and then
restores its mtime (`touch -r`, `rsync -t`) cannot restore the ctime.

The racy window: filesystem timestamps are coarse (a kernel tick, or worse on
some filesystems). A file hashed in the same tick it was written can be
written again, same size, within that tick, and nothing in `stat` changes.
So, like git's "racily clean" entries, a digest is not recorded when the
file changed less than `racy_window_ns` before we hashed it; such a file is
simply hashed again next time.

Rows live in the `stat_cache` table of ROOT/index.db, next to the Index's
tables. sqlite's WAL mode and busy timeout let several pybuild processes
share it; each thread has its own connection. Writes are buffered inside a
`batch()` and committed in one short transaction at its end, so a large
checksum never holds the database's write lock while it reads files.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cache.digest import Digest
from cache.sqlite import Connections

_CHUNK = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stat_cache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    digest TEXT NOT NULL
)
"""


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def hash_file(path: Path) -> tuple[Digest, os.stat_result]:
    """sha256 of a file's bytes, and the fstat of the descriptor read.

    The fstat is taken after reading, so a caller can tell whether the file
    changed while it was hashed. O_NOFOLLOW: a path that became a symlink
    since it was listed is refused, never followed out of its tree.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
        after = os.fstat(f.fileno())
    return Digest("sha256", h.hexdigest()), after


class StatCache:
    """`file_digest(path, st)`: the sha256 of a regular file, from the cache
    when `st` matches what was recorded, else read and recorded.

    `hashed` and `hits` count, per instance, the files read and the files
    served from the cache; tests and `--debug` output use them.
    """

    def __init__(self, db_path: Path, *, racy_window_ns: int = 1_000_000_000):
        self.db_path = Path(db_path)
        self.racy_window_ns = racy_window_ns
        self._connections = Connections(self.db_path)
        self._local = threading.local()  # a thread's pending batch of rows
        self._counter_lock = threading.Lock()
        self.hashed = 0
        self.hits = 0
        # path -> (stat key, digest) seen by this process: a build reads the
        # same files more than once (the COPY's key, then the --explain
        # record), and a dict hit is ~20x cheaper than a sqlite SELECT.
        self._seen: dict[str, tuple[tuple, Digest]] = {}
        self._preloaded: set[str] = set()
        self._db().execute(_SCHEMA)

    # connections ---------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        return self._connections.get()

    def close(self) -> None:
        self._connections.close()

    # the cache -----------------------------------------------------------
    def lookup(self, path: Path, st: os.stat_result) -> Digest | None:
        known = self.known_digest(path, st)
        if known is not None:
            return known
        key = os.fspath(path)
        row = self._db().execute(
            "SELECT size, mtime_ns, ctime_ns, ino, dev, digest FROM stat_cache WHERE path=?",
            (key,),
        ).fetchone()
        if row is None or tuple(row[:5]) != _stat_key(st):
            return None
        digest = Digest.parse(row[5])
        self._seen[key] = (tuple(row[:5]), digest)
        return digest

    def known_digest(self, path, st: os.stat_result) -> Digest | None:
        """The digest this process already holds for `path` in the state `st`
        (read from the database or hashed and recorded), without touching
        the database or the file. Racy files are never held, so a digest
        returned here was stable for the racy window before it was taken."""
        seen = self._seen.get(os.fspath(path))
        if seen is not None and seen[0] == _stat_key(st):
            return seen[1]
        return None

    def file_digest(self, path: Path, st: os.stat_result) -> Digest:
        """The content digest of the regular file at `path`, whose lstat is `st`."""
        cached = self.lookup(path, st)
        if cached is not None:
            with self._counter_lock:
                self.hits += 1
            return cached
        started_ns = time.time_ns()
        digest, after = hash_file(path)
        with self._counter_lock:
            self.hashed += 1
        changed_while_read = _stat_key(after) != _stat_key(st)
        racy = started_ns - max(st.st_mtime_ns, st.st_ctime_ns) < self.racy_window_ns
        if not changed_while_read and not racy:
            self._record(os.fspath(path), st, digest)
        return digest

    def _record(self, path: str, st: os.stat_result, digest: Digest) -> None:
        self._seen[path] = (_stat_key(st), digest)
        row = (path, *_stat_key(st), str(digest))
        pending = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append(row)
            return
        self._write([row])

    def _write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO stat_cache(path, size, mtime_ns, ctime_ns, ino, dev, digest)"
                " VALUES (?,?,?,?,?,?,?)",
                rows,
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator["StatCache"]:
        """Buffer this thread's new records and commit them in one transaction
        when the block ends (also when it raises: what was hashed is valid)."""
        if getattr(self._local, "pending", None) is not None:
            yield self  # nested: the outer batch commits
            return
        self._local.pending = []
        try:
            yield self
        finally:
            rows, self._local.pending = self._local.pending, None
            self._write(rows)

    def preload(self, prefix: Path) -> int:
        """Read every record under `prefix` in one query (a range scan of the
        primary key), so that hashing a large selection costs dict lookups
        instead of one SELECT per file. Returns how many were read."""
        text = os.fspath(prefix).rstrip("/") + "/"
        if text in self._preloaded:
            return 0
        self._preloaded.add(text)
        # "0" is the character after "/": the half-open range holds exactly
        # the paths starting with `text`.
        rows = self._db().execute(
            "SELECT path, size, mtime_ns, ctime_ns, ino, dev, digest FROM stat_cache WHERE path >= ? AND path < ?",
            (text, text[:-1] + "0"),
        ).fetchall()
        for path, size, mtime_ns, ctime_ns, ino, dev, digest in rows:
            if path not in self._seen:
                self._seen[path] = ((size, mtime_ns, ctime_ns, ino, dev), Digest("sha256", digest.split(":", 1)[1]))
        return len(rows)

    def forget(self, prefix: Path) -> int:
        """Drop the records of files under `prefix` (e.g. a removed context)."""
        text = os.fspath(prefix).rstrip("/")
        for path in [p for p in self._seen if p == text or p.startswith(text + "/")]:
            self._seen.pop(path, None)
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                "DELETE FROM stat_cache WHERE path=? OR substr(path, 1, ?)=?",
                (text, len(text) + 1, text + "/"),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return cur.rowcount
