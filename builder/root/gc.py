"""Disk usage and garbage collection of a root (`pybuild du`, `pybuild prune`).

What lives in a root, by kind:
- base layers: snapshots extracted from base images or imported caches
  (index `bases`);
- build cache: the other snapshots, each the result of a step (index
  `results`);
- cache mounts: ROOT/cachemounts, the RUN --mount=type=cache directories;
- blobs: layer, config and manifest blobs in ROOT/content (a layer built
  into the local store is lazy: a recipe naming its snapshot, no bytes).

What prune removes:
- always: snapshots no cache result refers to, blobs nothing refers to, and
  the scratch directories of builds that died;
- `--filter until=DURATION`: also the results not used for that long;
- `--keep-storage SIZE`: also the least recently used results until the
  snapshots still referred to take at most SIZE (blobs are not counted:
  those of dropped snapshots go with them, those of images stay);
- `--all`: every result (the whole build cache) and the cache mounts.
A named image (`pybuild images`) keeps its manifest, config and layer blobs
whatever the options: --all removes the build cache behind it, never the
image itself (its lazy layers are written out before their snapshots go). Blobs recorded for a surviving snapshot are kept, so a base
layer is never re-tarred into different bytes.

Concurrency: every build holds a shared flock on ROOT/gc.lock while it
runs; prune takes it exclusively, so it never removes a snapshot a running
build has made but not yet recorded. Automatic GC after a build only
tries the lock and skips when another build is running.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import PybuildError
from builder.image import INDEX_TYPES
from builder.root.lock import RootLock
from cache.digest import Digest

KEEP_STORAGE_ENV = "PYBUILD_GC_KEEP_STORAGE"  # automatic GC after a build above this size


class GCError(PybuildError):
    """Bad prune options, or a root that cannot be collected."""


def parse_size(text: str) -> int:
    """`--keep-storage` and $PYBUILD_GC_KEEP_STORAGE, read as the config
    file reads `keep_storage`."""
    from builder.config import ConfigError, parse_size as parse

    try:
        return parse(text or "", "--keep-storage")
    except ConfigError as exc:
        raise GCError(str(exc)) from None


def parse_duration(text: str) -> float:
    """'90m', '24h', '7d', '1h30m' (docker's `until=` durations, Go's syntax
    plus days), read as the config file reads its GC durations."""
    from builder.config import ConfigError, parse_duration as parse

    try:
        return parse(text or "", "--filter until")
    except ConfigError as exc:
        raise GCError(str(exc)) from None


# sizes ----------------------------------------------------------------------------

def tree_size(path: Path, seen: set | None = None) -> int:
    """Bytes allocated below `path`, each inode once (hard links). Walked
    through directory fds, never following a symlink: a snapshot may be
    any number of levels deep (runtime.confine.walk)."""
    # Imported here, as remove_tree below: the no-op memo's replay imports
    # this module for auto_gc, which seldom walks (ctypes: ~4 ms).
    from runtime.confine import walk

    seen = set() if seen is None else seen
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return 0  # nothing below: absent, or no directory (a symlink is not followed)
        raise
    total = 0
    try:
        for parent, name, is_dir in walk(top):
            if is_dir is None:
                continue
            try:
                st = os.lstat(name, dir_fd=parent)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    finally:
        os.close(top)
    return total


@dataclass
class Usage:
    base_layers: tuple[int, int] = (0, 0)  # (count, bytes)
    build_cache: tuple[int, int] = (0, 0)
    unreferenced: tuple[int, int] = (0, 0)  # snapshots no result uses
    cache_mounts: tuple[int, int] = (0, 0)
    image_blobs: tuple[int, int] = (0, 0)
    other_blobs: tuple[int, int] = (0, 0)

    @property
    def total(self) -> int:
        return sum(v[1] for v in (self.base_layers, self.build_cache, self.unreferenced, self.cache_mounts,
                                  self.image_blobs, self.other_blobs))

    def rows(self) -> list[tuple[str, int, int]]:
        return [("base layers", *self.base_layers), ("build cache", *self.build_cache),
                ("unreferenced snapshots", *self.unreferenced), ("cache mounts", *self.cache_mounts),
                ("image blobs", *self.image_blobs), ("other blobs", *self.other_blobs)]


def disk_usage(worker) -> Usage:
    index, snapshots = worker.index, worker.snapshots
    bases = {s for _, s in index.all_bases()}
    in_results = {s for r in index.all_results() for s in r.chain}
    counts = {"base": [0, 0], "cache": [0, 0], "dead": [0, 0]}
    seen: set = set()  # a COPY links unchanged files from its previous result: count each inode once
    for snapshot in snapshots.ids():
        kind = "base" if snapshot in bases else "cache" if snapshot in in_results else "dead"
        counts[kind][0] += 1
        counts[kind][1] += tree_size(snapshots.root / snapshot, seen)
    mounts = [p for p in worker.cache_mounts.iterdir() if p.is_dir()] if worker.cache_mounts.is_dir() else []
    image_refs = _image_blobs(worker)
    blobs = {"image": [0, 0], "other": [0, 0]}
    for digest in worker.store.digests():
        kind = "image" if digest in image_refs else "other"
        blobs[kind][0] += 1
        blobs[kind][1] += worker.store.size(digest)
    return Usage(tuple(counts["base"]), tuple(counts["cache"]), tuple(counts["dead"]),
                 (len(mounts), sum(tree_size(p) for p in mounts)), tuple(blobs["image"]), tuple(blobs["other"]))


def _image_blobs(worker) -> set[Digest]:
    """Every blob a named image needs: manifests (and index children), configs, layers."""
    keep: set[Digest] = set()
    pending = [digest for _, digest, _ in worker.index.images()]
    while pending:
        digest = pending.pop()
        if digest in keep or not worker.store.has(digest):
            continue
        keep.add(digest)
        try:
            body = json.loads(worker.store.read_bytes(digest))
        except ValueError:
            continue
        if body.get("mediaType") in INDEX_TYPES or "manifests" in body:
            pending += [Digest.parse(m["digest"]) for m in body.get("manifests") or []]
        else:
            keep.update(Digest.parse(d["digest"]) for d in [body.get("config") or {}, *(body.get("layers") or [])]
                        if d.get("digest"))
    return keep


# prune ------------------------------------------------------------------------------

@dataclass
class PruneResult:
    results: int = 0
    snapshots: int = 0
    blobs: int = 0
    cache_mounts: int = 0
    freed: int = 0
    kept_images: list[str] = field(default_factory=list)


def prune(worker, *, all: bool = False, keep_storage: int | None = None, until: float | None = None,
          blocking: bool = True) -> PruneResult | None:
    """Collect the root (see the module docstring). Returns None when
    `blocking` is False and a build holds the root."""
    with RootLock(worker.root, exclusive=True, blocking=blocking) as lock:
        if not lock.held:
            return None
        return _prune_locked(worker, all, keep_storage, until)


def _prune_locked(worker, everything: bool, keep_storage, until) -> PruneResult:
    from builder.root.memo import forget
    from runtime.fsutil import remove_tree

    forget(worker.root)  # tiny, and re-made by the next full build of each command
    index, snapshots, store = worker.index, worker.snapshots, worker.store
    done = PruneResult()
    results = index.results_by_age()
    drop: set[str] = set()
    now = time.time()
    for key, chain, last_used in results:
        if everything or (until is not None and last_used < now - until):
            drop.add(key)
        elif any(not snapshots.exists(s) for s in chain):
            drop.add(key)  # dangling: a result whose snapshot is gone
    if keep_storage is not None:
        sizes: dict[str, int] = {}
        seen: set = set()
        for snapshot in snapshots.ids():
            sizes[snapshot] = tree_size(snapshots.root / snapshot, seen)
        for key, _, _ in results:  # least recently used first
            kept = {s for k, c, _ in results if k not in drop for s in c}
            if sum(sizes.get(s, 0) for s in kept) <= keep_storage:
                break
            drop.add(key)
    index.drop_results(sorted(drop))
    done.results = len(drop)

    live = {s for k, chain, _ in results if k not in drop for s in chain}
    dead = [s for s in snapshots.ids() if s not in live]
    before_removing_snapshots(worker, set(dead))
    for snapshot in dead:
        done.freed += tree_size(snapshots.root / snapshot)
        snapshots.remove(snapshot)
    index.forget_snapshots(dead)
    done.snapshots = len(dead)

    keep = _image_blobs(worker)
    keep.update(r.digest for r in index.all_layers() if r.snapshot in live)
    if not everything:
        # Base image manifests and configs: rebuilds resolve them offline.
        for digest in index.resolved_manifests():
            keep.add(digest)
            if store.has(digest):
                try:
                    body = json.loads(store.read_bytes(digest))
                    if body.get("config", {}).get("digest"):
                        keep.add(Digest.parse(body["config"]["digest"]))
                except ValueError:
                    pass
    for digest in list(store.digests()):
        if digest not in keep:
            done.freed += store.size(digest)
            store.delete(digest)
            done.blobs += 1
    for digest in list(store.lazy_digests()):
        if digest not in keep:
            store.delete(digest)  # a recipe: the bytes were the snapshot's
            done.blobs += 1

    _forget_layer_facts(worker, live, keep)
    if everything and worker.cache_mounts.is_dir():
        for entry in worker.cache_mounts.iterdir():
            if entry.is_dir():
                done.freed += tree_size(entry)
                remove_tree(entry)
                done.cache_mounts += 1
    # Scratch of builds that died (no build runs while we hold the lock).
    tmp = worker.root / "tmp"
    if tmp.is_dir():
        for entry in tmp.iterdir():
            if entry.name.startswith("build-"):
                remove_tree(entry, ignore_errors=True)
    return done


def _forget_layer_facts(worker, live: set[str], kept: set[Digest]) -> None:
    """The SBOM facts of layers the root no longer holds in any form: not
    a live snapshot's layer, nor a layer of a config still kept."""
    from builder.attest.layerfacts import FactsCache

    diff_ids = {str(r.diff_id) for r in worker.index.all_layers() if r.snapshot in live}
    for digest in kept:
        store = worker.store
        if store.has(digest) and not store.is_lazy(digest) and store.size(digest) <= _CONFIG_MAX:
            try:
                body = json.loads(store.read_bytes(digest))
            except ValueError:
                continue  # a small layer, not JSON
            if isinstance(body, dict) and isinstance(body.get("rootfs"), dict):
                diff_ids.update(str(d) for d in body["rootfs"].get("diff_ids") or [])
    facts = FactsCache(worker.index.path)
    try:
        facts.forget(diff_ids)
    finally:
        facts.close()


# An image config is a few KiB; a blob larger than this is a layer.
_CONFIG_MAX = 1 << 20


def before_removing_snapshots(worker, doomed: set[str]) -> None:
    """Keep every lazy layer that outlives `doomed` makeable: a recipe
    naming a doomed snapshot is pointed at a surviving snapshot with the
    same layer (identical steps give identical tars), or else, for a named
    image's layer, the bytes are written out (an image outlives the build
    cache). The rest go with their snapshots."""
    from builder.export.layers import clamp_of_key, snapshot_recipe

    store = worker.store
    doomed_lazy = {}
    for digest in store.lazy_digests():
        recipe = store.recipe(digest)
        if recipe is not None and recipe.get("snapshot") in doomed:
            doomed_lazy[digest] = recipe
    if not doomed_lazy:
        return
    survivors = {r.digest: r for r in worker.index.all_layers()
                 if r.digest in doomed_lazy and r.snapshot not in doomed}
    images = _image_blobs(worker)
    for digest, recipe in doomed_lazy.items():
        other = survivors.get(digest)
        if other is not None:
            store.put_lazy(digest, recipe["size"], snapshot_recipe(other.snapshot, clamp_of_key(other.compression)))
        elif digest in images:
            store.materialize(digest)


GC_INTERVAL_S = 60.0  # without $PYBUILD_GC_KEEP_STORAGE: measuring a root walks it, so at most this often
_CHECKED = "gc.checked"
DEFAULT_SHARE = 0.10  # BuildKit's default keepBytes: a tenth of the disk...
DEFAULT_FALLBACK = 2 * 2**30  # ...or 2 GB when the disk cannot be measured


@dataclass(frozen=True)
class Rule:
    """One automatic GC step: keep at most `keep_storage` bytes in the root,
    and/or no result unused for longer than `keep_duration` seconds."""

    keep_storage: int | None = None
    keep_duration: float | None = None


def default_keep_storage(root: Path) -> int:
    try:
        st = os.statvfs(root)
    except OSError:
        return DEFAULT_FALLBACK
    return int(st.f_blocks * st.f_frsize * DEFAULT_SHARE) or DEFAULT_FALLBACK


def gc_rules(root: Path, policies=()) -> tuple[Rule, ...]:
    """What automatic GC keeps: $PYBUILD_GC_KEEP_STORAGE, else the config
    file's `[[gc.policy]]` entries (those with `type==` filters are not
    applied: pybuild has no record types to filter on), else a tenth of the
    root's filesystem, as BuildKit's default."""
    limit_text = os.environ.get(KEEP_STORAGE_ENV)
    if limit_text:
        return (Rule(keep_storage=parse_size(limit_text)),)
    if policies:
        return tuple(Rule(p.keep_storage, p.keep_duration) for p in policies
                     if not p.filters and (p.keep_storage is not None or p.keep_duration is not None))
    return (Rule(keep_storage=default_keep_storage(root)),)


def _surely_within(root: Path, limit: int) -> bool:
    """The root's filesystem holds no more than `limit` bytes in all, so the
    root cannot either: no walk needed. On a roomy disk (a fresh CI machine
    under BuildKit's default of a tenth of the disk) this skips the walk."""
    try:
        st = os.statvfs(root)
    except OSError:
        return False
    return (st.f_blocks - st.f_bfree) * st.f_frsize <= limit


def _due(root: Path) -> bool:
    """True at most once per GC_INTERVAL_S (one stat otherwise)."""
    stamp = Path(root) / _CHECKED
    try:
        if time.time() - stamp.stat().st_mtime < GC_INTERVAL_S:
            return False
    except FileNotFoundError:
        pass
    stamp.touch()
    return True


def auto_gc(worker, reporter, policies=()) -> PruneResult | None:
    """After a build, each rule of gc_rules in turn: collect when the root
    holds more than its size, or a result was unused for longer than its
    duration. Checked after every build when $PYBUILD_GC_KEEP_STORAGE is
    set, otherwise at most once a minute."""
    rules = due_rules(worker.root, policies)
    return apply_rules(worker, rules, reporter) if rules else None


def due_rules(root: Path, policies=()) -> tuple[Rule, ...]:
    """The rules of gc_rules that automatic GC must look into now, from the
    root's path alone: none when no check is due; of the others, those a
    statvfs cannot settle (a size the filesystem might exceed, or a
    duration). Only these need the root opened: the no-op memo's replay
    opens it for them alone (builder/root/replay.py)."""
    if not os.environ.get(KEEP_STORAGE_ENV) and not _due(root):
        return ()
    return tuple(rule for rule in gc_rules(root, policies) if rule.keep_duration is not None
                 or (rule.keep_storage is not None and not _surely_within(root, rule.keep_storage)))


def apply_rules(worker, rules: tuple[Rule, ...], reporter) -> PruneResult | None:
    """Collect for each of `rules` (from due_rules) in turn, as auto_gc does."""
    done = usage = None
    for rule in rules:
        budget = None
        if rule.keep_storage is not None and not _surely_within(worker.root, rule.keep_storage):
            usage = usage or disk_usage(worker)  # a walk of the root: again only after a prune
            if usage.total > rule.keep_storage:
                # The images' blobs and the cache mounts are not the build cache's to give up.
                budget = max(0, rule.keep_storage - usage.image_blobs[1] - usage.cache_mounts[1])
        stale = rule.keep_duration is not None and any(
            last_used < time.time() - rule.keep_duration for _, _, last_used in worker.index.results_by_age())
        if budget is None and not stale:
            continue  # nothing to do: prune would only forget the memos
        result = prune(worker, keep_storage=budget, until=rule.keep_duration if stale else None, blocking=False)
        if result is None:
            return done  # a build holds the root: the next one collects
        reporter.message(f"garbage collection: freed {result.freed} bytes "
                         f"({result.results} results, {result.snapshots} snapshots, {result.blobs} blobs)")
        done, usage = result, None
    return done
