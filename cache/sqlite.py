"""Per-thread sqlite connections to one database file, shared by processes.

WAL lets readers go on while one writer commits; the busy timeout queues
writers, also across pybuild processes. Every connection opened is kept, so
that close() closes those of finished worker threads too (they would
otherwise keep the file, and its filesystem, busy).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from cache.errors import IndexDamaged

BUSY_TIMEOUT_S = 60


def _enable_wal(db: sqlite3.Connection) -> None:
    # Switching to WAL needs a moment of exclusive access and does not wait
    # on the busy handler; the mode is persistent, so it is usually on
    # already and only a brand-new file needs the retry.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Connections:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        """This thread's connection. isolation_level=None: callers issue
        BEGIN/COMMIT themselves, so a lookup never pins the WAL."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
            try:
                _enable_wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError:
                db.close()
                raise  # busy past the timeout, or the file unreachable: not damage
            except sqlite3.DatabaseError as exc:  # "file is not a database", a malformed page
                db.close()
                raise IndexDamaged(self.path, exc) from exc
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db

    def close(self) -> None:
        """Close every thread's connection; call once no thread uses them."""
        self._local.db = None
        with self._lock:
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()
