"""`RUN --mount=type=cache` directories, shared by every build of a root.

Each cache id has a directory under ROOT/cachemounts. `sharing=locked`
takes an exclusive flock on the id for the step's whole run, which also
serialises two pybuild processes; `private` takes the first instance not
in use (making a new one when all are busy); `shared` never waits.
Their contents never enter a cache key. `--cache-to ...,cache-mounts=true`
copies an instance out under `held_for_export`, which waits for a
`locked` or `private` step using it; a `shared` step of another build may
still be writing it meanwhile (runtime.layer reads it as a live tree).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path

from frontend.ops import MountSpec, Sharing
from runtime import userns


def _instance_dir(base: Path, cache_id: str, n: int) -> Path:
    name = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
    return base / (name if n == 0 else f"{name}-{n}")


def _prepare(path: Path, spec: MountSpec, seed) -> None:
    if path.is_dir():
        return
    fresh = path.with_name(path.name + ".new")
    fresh.mkdir(parents=True, exist_ok=True)
    if seed is None or not seed(fresh):
        os.chmod(fresh, spec.mode if spec.mode is not None else 0o755)
        userns.chown(fresh, spec.uid or 0, spec.gid or 0)
    os.replace(fresh, path)


@contextlib.contextmanager
def cache_mount_dir(base: Path, spec: MountSpec, seed=None):
    """Yield the host directory to bind at spec.target for one step.

    `seed(dir)` fills a new cache from `from=`/`source=` before first use;
    it returns True when it also gave the directory its mode and owner.
    """
    base.mkdir(parents=True, exist_ok=True)
    cache_id = spec.cache_id or spec.target
    if spec.sharing is Sharing.SHARED:
        path = _instance_dir(base, cache_id, 0)
        with _locked(path, blocking=True):  # only around creation
            _prepare(path, spec, seed)
        yield path
        return
    n = 0
    while True:
        path = _instance_dir(base, cache_id, n)
        lock = _locked(path, blocking=spec.sharing is Sharing.LOCKED)
        try:
            lock.__enter__()
        except BlockingIOError:
            n += 1
            continue
        try:
            _prepare(path, spec, seed)
            yield path
        finally:
            lock.__exit__(None, None, None)
        return


@contextlib.contextmanager
def held_for_export(path: Path, on_wait=None):
    """Hold the cache instance `path` as a `locked` step holds it while it
    runs, so that no such step (nor a `private` one, which then takes
    another instance) writes it while it is copied out; a `shared` step
    starting meanwhile waits too (it takes the lock to make the directory),
    one already running does not. `on_wait()` is called first when the
    lock is taken."""
    try:
        lock = _locked(path, blocking=False)
        lock.__enter__()
    except BlockingIOError:
        if on_wait is not None:
            on_wait()
        lock = _locked(path, blocking=True)
        lock.__enter__()
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@contextlib.contextmanager
def _locked(path: Path, blocking: bool):
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)
