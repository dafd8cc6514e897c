"""Taking back what dead pybuild processes left in a root.

A pybuild killed by SIGKILL (how CI runners cancel jobs) cleans up
nothing: its overlay mounts stay mounted, its snapshot of the step that
ran stays unrecorded, its half-written blobs and per-build scratch stay,
and its step scratch stays on /dev/shm. (Its processes do not stay: the
builtin sandbox dies with it through PR_SET_PDEATHSIG, an OCI step through
runtime/supervise.py.)

Every process using a root holds a lease on it (runtime/lease.py, in
ROOT/snapshots/.leases) from `Worker.open` to `Worker.close`, and names
its merged views and the remote context it fetches (ROOT/tmp/context-*,
builder/root/scratch.py) with its token. The next process to open the
root finds the dead ones by their free leases, and:
- unmounts and removes the merged views and flattened lowers named with
  a dead token, and removes the contexts named with one. Nobody else uses
  them, so this is done whatever else runs;
- when no other process holds a lease on the root (the leases' gate keeps
  new ones out meanwhile) and this one uses it nowhere else, removes what
  carries no name to tell its maker by: snapshots no cache record refers
  to, overlay workdirs, stray mounts, half-written blobs, ROOT/tmp. These
  are a dead process's: any live one would hold a lease. Otherwise they
  wait for the next open when the root is quiet (or for prune), and the
  dead leases stay to say so.
Step scratch on /dev/shm (git's HOME included), the container of an OCI
step whose supervisor was killed as well and the cgroups of a builtin step
with limits are reclaimed by runtime.executor.remove_stale_scratch, by the
same kind of lease.
"""

from __future__ import annotations

import os
from pathlib import Path

from builder.root.doctor import Problem, remove_leftovers
from builder.root.scratch import scratch_owner
from cache.errors import CacheError
from runtime.errors import RuntimeFailure
from runtime.executor import remove_stale_scratch
from runtime.fsutil import remove_tree


def reclaim(worker) -> list[Problem]:
    """Take back what dead processes left in the worker's root (see the
    module docstring); returns what was removed besides their merged
    views. The caller holds the worker's lease. Each kind of leftover is
    taken back on its own: one that cannot be (another user's file, an
    I/O error) must not keep the others."""
    _attempt(remove_stale_scratch)
    snapshots = worker.snapshots
    leases = snapshots.leases
    dead = leases.dead()
    if not dead:
        return []
    with leases.gate():
        dead = leases.dead()
        _attempt(snapshots.remove_left_by, dead)
        _attempt(_remove_contexts, Path(worker.root) / "tmp", set(dead))
        if leases.others_alive() or leases.holders_here() > 1:
            return []  # someone may be between making a snapshot and recording it
        removed = _attempt(remove_leftovers, worker) or []
        for owner in dead:
            _attempt(leases.drop, owner)
    return removed


def _attempt(step, *args):
    """`step(*args)`, or None when it failed: what it left stays for
    `pybuild doctor` to show and the next open to try again."""
    try:
        return step(*args)
    except (OSError, RuntimeFailure, CacheError):
        return None


def _remove_contexts(tmp: Path, owners: set[str]) -> None:
    """The fetched contexts of these (dead) processes."""
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return
    for name in names:
        if scratch_owner(name) in owners:
            remove_tree(tmp / name, ignore_errors=True)
