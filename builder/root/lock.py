"""The root-wide lock: ROOT/gc.lock, held shared by every build (and by
whatever reads a snapshot, a replayed memo included) and exclusively by
garbage collection, so that prune never removes a snapshot a running build
has made but not yet recorded (builder/root/gc.py)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "gc.lock"


class RootLock:
    """A flock on ROOT/gc.lock: shared for builds, exclusive for GC.

    With `reentrant=True`, a process that already holds the root's lock
    (either kind) takes nothing more: a second flock from the same process
    would wait for its own exclusive lock."""

    _held_here: dict[Path, int] = {}  # root -> locks this process holds on it

    def __init__(self, root: Path, exclusive: bool, blocking: bool = True, reentrant: bool = False):
        self._root = Path(root).resolve()
        self._fd = -1
        self.held = False
        if reentrant and self._held_here.get(self._root):
            return
        self._fd = os.open(self._root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(self._fd, mode | (0 if blocking else fcntl.LOCK_NB))
            self.held = True
            self._held_here[self._root] = self._held_here.get(self._root, 0) + 1
        except BlockingIOError:
            pass

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1
            if self.held:
                self._held_here[self._root] -= 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
