"""Leases: whether the pybuild process that made something is still alive.

A pybuild killed by SIGKILL runs no cleanup, and what it leaves (overlay
mount points, scratch directories on /dev/shm, OCI containers) must be told
apart from what live processes are using. Each process has a token
(`<pid>_<random>`) that it puts in the names of such things, and it holds
an exclusive flock on the file `<directory>/<prefix><token>` while they may
exist. The kernel drops a flock when its holder dies, however it dies: a
process that can take the lock knows that the owner is gone, and that what
carries its token is left over. Liveness is never guessed from a pid (pids
are reused, and mean nothing across pid namespaces) or from an age.

The lease file is locked before it becomes visible (made under a temporary
name, then renamed), and it exists before anything carries its token, so
a missing lease file also means a dead owner.

A "gated" directory (a root's) also has a gate, a flock on the directory
itself: `hold` takes it shared while it makes a lease, `gate` exclusively.
While a process holds the gate, no other process can begin to use what
the leases guard, so what it finds unowned stays unowned meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
from pathlib import Path
from typing import Iterator

__all__ = ["Leases", "is_token", "token"]

_TOKEN_RE = re.compile(r"[0-9]+_[0-9a-f]{8}")
_NEW = ".new"  # suffix of a lease file still being made

_lock = threading.Lock()  # _token and _held
_making = threading.Lock()  # one lease file made at a time
_token: str | None = None
# lease file -> [fd holding the flock, number of holders in this process]
_held: dict[str, list[int]] = {}


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def token() -> str:
    """This process's token, made on first use."""
    global _token
    with _lock:
        if _token is None:
            _token = f"{os.getpid()}_{os.urandom(4).hex()}"
        return _token


def _forget_after_fork() -> None:
    # A forked child is another process: it neither owns the parent's
    # leases nor may it remove their files at exit, and its copies of the
    # locked descriptors must not keep a dead parent's leases alive.
    global _token, _lock, _making
    _lock = threading.Lock()
    _making = threading.Lock()
    _token = None
    for fd, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _remove_at_exit() -> None:
    for path, (fd, _) in list(_held.items()):
        with contextlib.suppress(OSError):
            os.unlink(path)  # unlinked while still locked: never seen free
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


class Leases:
    """The lease files of one directory, named `<prefix><token>`."""

    def __init__(self, directory: Path, prefix: str = "", *, gated: bool = False):
        self.directory = Path(directory)
        self.prefix = prefix
        self.gated = gated

    def _path(self, owner: str) -> str:
        return os.path.join(self.directory, self.prefix + owner)

    # --- this process's lease -----------------------------------------------

    def hold(self) -> str:
        """Hold this process's lease here (once more); returns the token.
        Each `hold` needs one `release`."""
        owner = token()
        path = self._path(owner)
        with _making:
            with _lock:
                entry = _held.get(path)
                if entry is not None:
                    entry[1] += 1
                    return owner
            # not under _lock: whoever holds the gate may need it meanwhile
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with self._gate(fcntl.LOCK_SH) if self.gated else contextlib.nullcontext():
                fd = self._make(path)
            with _lock:
                _held[path] = [fd, 1]
        return owner

    def keep(self) -> str:
        """Hold the lease for the rest of the process's life."""
        owner = token()
        with _lock:
            if self._path(owner) in _held:
                return owner
        return self.hold()

    def release(self) -> None:
        path = self._path(token())
        with _lock:
            entry = _held.get(path)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[path]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(entry[0])

    def holders_here(self) -> int:
        """How many holds this process has on its lease here."""
        path = self._path(token())
        with _lock:
            entry = _held.get(path)
            return entry[1] if entry else 0

    def _make(self, path: str) -> int:
        # Here, not above: the memo's replay reads the leases (dead()) and
        # holds none, and tempfile (shutil, random) is ~5 ms of its ~70.
        import tempfile

        while True:
            fd, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + _NEW, dir=self.directory)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.rename(temporary, path)
                return fd
            except FileNotFoundError:
                # an ungated directory: another process took the temporary
                # file, seen before we locked it, for a dead one's
                os.close(fd)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise

    # --- everyone's leases ----------------------------------------------------

    def alive(self, owner: str) -> bool:
        """Whether the process with this token still holds its lease here."""
        return owner == _token or _is_held(self._path(owner))

    def _files(self) -> dict[str, list[str]]:
        """token -> its lease file and half-made ones."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return {}
        found: dict[str, list[str]] = {}
        for name in names:
            if not name.startswith(self.prefix):
                continue
            owner = name[len(self.prefix):].split(_NEW, 1)[0]
            if _TOKEN_RE.fullmatch(owner):
                found.setdefault(owner, []).append(os.path.join(self.directory, name))
        return found

    def dead(self) -> list[str]:
        """The tokens of the lease files here whose owner has died."""
        return sorted(owner for owner, paths in self._files().items()
                      if owner != _token and not any(_is_held(path) for path in paths))

    def others_alive(self) -> bool:
        """Whether another process holds a lease here."""
        return any(owner != _token and any(_is_held(path) for path in paths)
                   for owner, paths in self._files().items())

    def drop(self, owner: str) -> None:
        """Remove a dead owner's lease files: this user's only. In a
        directory users share (/dev/shm) another user's file counts as dead
        to us (see _is_held) but is not ours to remove: root would take a
        live rootless build's lease away, and a user is refused (EPERM, the
        sticky bit) and would stop taking back its own leftovers."""
        for path in self._files().get(owner, []):
            if owner != _token and _owned_by_us(path) and not _is_held(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    @contextlib.contextmanager
    def gate(self) -> Iterator[None]:
        """No lease is made here while this is held (gated directories)."""
        if not self.gated:
            raise ValueError(f"{self.directory} has no gate")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with self._gate(fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def _gate(self, mode: int) -> Iterator[None]:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)


def _owned_by_us(path: str) -> bool:
    try:
        return os.lstat(path).st_uid == os.geteuid()
    except FileNotFoundError:
        return False


def _is_held(path: str) -> bool:
    """Whether a live process holds the flock of this lease file. A file
    made by another user does not count: it could be planted to keep our
    leftovers (a step's secrets on /dev/shm) from ever being removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EACCES):
            return False
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)  # and with it the lock we may have taken
