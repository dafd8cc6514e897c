"""`pybuild doctor`: check that a root is consistent, and repair it.

What a root promises (docs/architecture.md) and what is checked here:
- every blob under content/blobs matches its digest (a corrupt blob is
  worse than a missing one: it would be served as valid);
- every layer record names a blob that exists (a missing one is made again
  from its snapshot on the next export);
- every cached result's snapshots exist, every extracted base layer's too;
- every image name points at a manifest, config and layers that are in the
  store (a lazy layer, see cache/store.py, at a snapshot that exists);
- no snapshot exists that nothing refers to (an orphan: a build killed
  between making a snapshot and recording it);
- nothing temporary is left: ingest files, `.mnt-`/`.flat-` directories
  and their mounts, overlay workdirs, per-build scratch under tmp/.

`fix=True` removes what is broken or orphaned; a removed result or layer
record is simply rebuilt by the next build. Run it when no build uses the
root: a running build's fresh snapshots and temp files look orphaned (its
mounts and merged views do not: their maker's lease shows it alive).

What a pybuild killed by SIGKILL leaves is taken back by the next command
that opens the root (builder/root/reclaim.py, through `remove_leftovers`), so
doctor should rarely find any of it.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path

from builder.root.gc import before_removing_snapshots
from builder.root.scratch import is_context_scratch
from cache.digest import Digest
from cache.errors import CacheError
from runtime import linux
from runtime.fsutil import remove_tree
from runtime.mounts import mount_points_below


class Kind(enum.Enum):
    CORRUPT_BLOB = "corrupt blob"
    MISSING_BLOB = "missing blob"
    MISSING_SNAPSHOT = "missing snapshot"
    BROKEN_IMAGE = "image missing a blob"
    ORPHAN_SNAPSHOT = "orphan snapshot"
    STRAY_TEMP = "stray temp file"
    STALE_MOUNT = "stale mount"


@dataclass(frozen=True)
class Problem:
    kind: Kind
    detail: str
    fixed: bool = False

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}{' (fixed)' if self.fixed else ''}"


def check(worker, *, fix: bool = False) -> list[Problem]:
    """Every inconsistency of the worker's root; with `fix`, each repaired."""
    doctor = _Doctor(worker, fix)
    doctor.mounts()  # first: a stale mount keeps its directory busy
    doctor.blobs()
    doctor.results()
    doctor.images()
    doctor.orphans()
    doctor.temp_files()
    return doctor.problems


def remove_leftovers(worker) -> list[Problem]:
    """Remove what only a crash leaves (stale mounts, temporary
    directories, snapshots nothing records, temp files), returned as fixed
    problems. Right only while no other process uses the root, which
    builder.root.reclaim makes sure of. A fetched remote context
    (ROOT/tmp/context-*) is kept: it is named with its maker's token, and
    builder.root.reclaim removes those of dead makers only."""
    doctor = _Doctor(worker, fix=True, spare=lambda path: path.parent == doctor.root / "tmp"
                     and is_context_scratch(path.name))
    doctor.mounts()
    doctor.orphans()
    doctor.temp_files()
    return doctor.problems


class _Doctor:
    def __init__(self, worker, fix: bool, spare=lambda path: False):
        self.worker = worker
        self.root = Path(worker.root).resolve()
        self.fix = fix
        self.spare = spare
        self.problems: list[Problem] = []

    def _in_use(self, path: Path) -> bool:
        """A merged view (or a mount in it) of a live process."""
        snapshots = self.worker.snapshots
        try:
            name = path.relative_to(Path(snapshots.root).resolve()).parts[0]
        except (ValueError, IndexError):
            return False
        owner = snapshots.made_by(name)
        return owner is not None and snapshots.leases.alive(owner)

    def _found(self, kind: Kind, detail: str, repair=None) -> None:
        fixed = False
        if self.fix and repair is not None:
            repair()
            fixed = True
        self.problems.append(Problem(kind, detail, fixed))

    # --- checks ------------------------------------------------------------

    def mounts(self) -> None:
        points = [p for p in mount_points_below(str(self.root)) if p != str(self.root)]
        for point in sorted(points, reverse=True):
            if self._in_use(Path(point)):
                continue
            self._found(Kind.STALE_MOUNT, point, lambda p=point: linux.umount(p, linux.MNT_DETACH))

    def blobs(self) -> None:
        store, index = self.worker.store, self.worker.index
        corrupt: set[Digest] = set()
        for digest in [*store.digests(), *store.lazy_digests()]:
            try:
                ok = store.verify(digest)
            except (CacheError, ValueError, OSError):
                ok = False
            if not ok:
                corrupt.add(digest)
                self._found(Kind.CORRUPT_BLOB, str(digest), lambda d=digest: store.delete(d))
        for record in index.all_layers():
            if record.empty:
                continue
            if record.digest in corrupt or not store.has(record.digest):
                self._found(Kind.MISSING_BLOB, f"{record.digest} (layer of snapshot {record.snapshot})",
                            lambda r=record: index.drop_layer(r.snapshot, r.compression))

    def results(self) -> None:
        index, snapshots = self.worker.index, self.worker.snapshots
        for result in index.all_results():
            missing = [s for s in result.chain if not snapshots.exists(s)]
            if missing:
                self._found(Kind.MISSING_SNAPSHOT, f"{', '.join(missing)} (cache key {result.key})",
                            lambda k=result.key: index.drop_result(k))
        for chain_id, snapshot in index.all_bases():
            if not snapshots.exists(snapshot):
                self._found(Kind.MISSING_SNAPSHOT, f"{snapshot} (base layer {chain_id})",
                            lambda c=chain_id: index.drop_base(c))

    def images(self) -> None:
        store, index = self.worker.store, self.worker.index
        for name, manifest, _ in index.images():
            needed = [manifest]
            if store.has(manifest):
                try:
                    body = json.loads(store.read_bytes(manifest))
                    if "config" in body:
                        needed.append(Digest.parse(body["config"]["digest"]))
                        needed += [Digest.parse(layer["digest"]) for layer in body.get("layers", [])]
                except (ValueError, KeyError, TypeError, CacheError):
                    pass
            # A lazy layer is only as good as the snapshot it names.
            missing = [d for d in needed if not store.has(d) or (store.is_lazy(d) and not store.verify(d))]
            if missing:
                self._found(Kind.BROKEN_IMAGE, f"{name} -> {missing[0]}",
                            lambda n=name: index.remove_image(n))

    def orphans(self) -> None:
        index, snapshots = self.worker.index, self.worker.snapshots
        referenced: set[str] = set()
        for result in index.all_results():
            referenced.update(result.chain)
        referenced.update(snapshot for _, snapshot in index.all_bases())
        for snapshot in snapshots.ids():
            if snapshot not in referenced:
                def repair(s=snapshot):
                    before_removing_snapshots(self.worker, {s})
                    for record in index.layers_of(s):
                        index.drop_layer(s, record.compression)
                    snapshots.remove(s)
                self._found(Kind.ORPHAN_SNAPSHOT, snapshot, repair)
            elif (snapshots.root / snapshot / "work").exists():
                self._found(Kind.STRAY_TEMP, f"snapshots/{snapshot}/work",
                            lambda s=snapshot: remove_tree(snapshots.root / s / "work"))
        # directories that are no snapshot at all (a crash inside create())
        for entry in sorted(os.listdir(snapshots.root)):
            path = snapshots.root / entry
            if snapshots.made_by(entry) is not None:
                stray = not self._in_use(path.resolve())  # merged views, flattened lowers, probes
            else:
                stray = not entry.startswith(".") and path.is_dir() and not snapshots.exists(entry)
            if stray:
                self._found(Kind.STRAY_TEMP, f"snapshots/{entry}", lambda p=path: _remove(p))

    def temp_files(self) -> None:
        for directory in (self.worker.store.tmp_dir, self.root / "tmp"):
            if not directory.is_dir():
                continue
            for entry in sorted(os.listdir(directory)):
                path = directory / entry
                if not self.spare(path):
                    self._found(Kind.STRAY_TEMP, str(path.relative_to(self.root)), lambda p=path: _remove(p))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        remove_tree(path)
    else:
        path.unlink(missing_ok=True)
