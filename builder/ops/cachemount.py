"""`RUN --mount=type=cache` directories, shared by every build of a root.

Each cache has a directory under ROOT/cachemounts. A cache is its id and,
as in BuildKit 0.13, what it starts from when it is not empty: the
`from` filesystem, or the directory uid/gid/mode make (BuildKit keys a
cache on the id and the ref of its input: two mounts of one id with
different owners are two caches; testdata/compat/mount-cache-identity-owner). `sharing=locked`
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


def _instance_dir(base: Path, identity: str, n: int) -> Path:
    name = hashlib.sha256(identity.encode()).hexdigest()[:32]
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


def made_with_metadata(spec: MountSpec) -> bool:
    """Whether the cache's first state is a directory made with spec's uid,
    gid and mode rather than what `from` holds: BuildKit's setCacheUIDGID
    applies them only at the root of `from` (or without one), and only
    when any is given."""
    return spec.source in ("", "/") and (spec.uid is not None or spec.gid is not None or spec.mode is not None)


def cache_identity(spec: MountSpec, from_ref: str = "") -> str:
    """What names the cache `spec` mounts: its id (the target by default),
    and `from_ref` (what names the `from` filesystem's state, "" without
    one) and the owner and mode it is made with, when they give it a first
    state (BuildKit's setCacheUIDGID: only at the root of `from`, and
    with any of uid, gid or mode). Only the id for a plain cache: the name
    such a cache always had. A `from` cache mounted with a `source` later
    mounted without one (or with another) shows what that one wrote in
    BuildKit, which pybuild does not: a deliberate difference, rare, to
    spare a copy of the whole `from` filesystem per cache."""
    identity = spec.cache_id or spec.target
    if from_ref:
        # BuildKit's cache is the whole `from` filesystem, `source` the part
        # of it mounted; pybuild's holds that part only, one per `source`.
        identity += "\0from=" + from_ref + "\0source=" + (spec.source.strip("/") or "/")
    if made_with_metadata(spec):
        mode = 0o755 if spec.mode is None else spec.mode
        identity += f"\0made={spec.uid or 0}:{spec.gid or 0}:{mode:o}"
    return identity


@contextlib.contextmanager
def cache_mount_dir(base: Path, spec: MountSpec, seed=None, from_ref: str = ""):
    """Yield the host directory to bind at spec.target for one step.

    `seed(dir)` fills a new cache from `from=`/`source=` before first use;
    it returns True when it also gave the directory its mode and owner.
    `from_ref` names the state of the `from` filesystem (cache_identity).
    """
    base.mkdir(parents=True, exist_ok=True)
    cache_id = cache_identity(spec, from_ref)
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
