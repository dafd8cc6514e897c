"""`--cache-from`: serve cache misses from an exported cache.

Before solving, each source's cache config is loaded (a registry cache
manifest, an image with inline cache, or an OCI layout directory). The
solver then sees `ImportingResults`: a key missing from the local index but
present in an imported config is materialised on the spot, bottom layer
first: each blob is fetched (digest-checked), extracted into a snapshot
(shared through the index `bases` table by chain ID, like base image
layers) and remembered with its original blob, so that exporting the image
reuses the very same layer digests. The solver then treats it as a hit, so
a fresh machine runs no RUN whose result the cache holds.

A cache that cannot be loaded is a warning, not an error, as in BuildKit:
the build is still correct without it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from builder.remotecache.config import CACHE_CONFIG_MEDIA_TYPE, INLINE_KEY, CacheConfig, CacheConfigError, CacheLayer
from builder.remotecache.spec import CacheSpec, CacheType
from builder.export.compression import Compression, DecompressionError, decompressing_reader
from builder.errors import PybuildError, RegistryError
from builder.image import Descriptor
from builder.export.layers import LayerMismatch, LayerTooLarge, check_layer_size, extract_layer
from builder.context.layout import LayoutError, copy_blob, tagged_entries
from builder.registry.reference import Reference
from cache.digest import Digest
from cache.index import LayerRecord
from cache.keys import chain_id
from runtime import layer as layer_tar
from runtime.fsutil import remove_tree


class CacheImportError(PybuildError):
    """An imported cache blob that is missing or does not match its config."""


@dataclass
class ImportedCache:
    name: str  # for messages: the ref or directory
    config: CacheConfig
    fetch: Callable[[Descriptor], None]  # put one blob into the local store
    max_layer_size: int | None = None  # the config file's [limits] max_layer_size


def load_caches(specs: list[CacheSpec], session, reporter, platform: str) -> list[ImportedCache]:
    caches = []
    for spec in specs:
        try:
            if spec.type is CacheType.REGISTRY:
                cache = _from_registry(spec, session, platform)
            elif spec.type is CacheType.LOCAL:
                cache = _from_layout(spec, session.store)
            else:
                continue
            limits = session.options.size_limits
            cache.max_layer_size = limits.max_layer_size if limits is not None else None
            caches.append(cache)
        except (RegistryError, CacheConfigError, CacheImportError) as exc:
            reporter.warning(f"failed to import cache {spec}: {exc}")
    return caches


def _from_registry(spec: CacheSpec, session, platform: str) -> ImportedCache:
    ref = Reference.parse(spec.ref)
    resolved = session.registry.resolve(ref, platform)
    if resolved.config.media_type == CACHE_CONFIG_MEDIA_TYPE:
        body = resolved.config_json
    elif isinstance(resolved.config_json.get(INLINE_KEY), dict):
        body = resolved.config_json[INLINE_KEY]  # an image built with --cache-to type=inline
    else:
        raise CacheConfigError(f"{ref} holds neither a pybuild cache nor an image with inline cache")
    config = CacheConfig.from_json(body, str(ref))
    return ImportedCache(str(ref), config, lambda desc: session.registry.fetch_blob(ref, desc))


def _from_layout(spec: CacheSpec, store) -> ImportedCache:
    root = Path(spec.path)
    try:
        entries = tagged_entries(root, spec.tag)
    except LayoutError as exc:
        raise CacheImportError(str(exc)) from None
    if not entries:
        raise CacheImportError(f"{root} has no cache tagged {spec.tag!r}")

    def fetch(desc: Descriptor) -> None:
        try:
            copy_blob(root, store, desc.digest, desc.size)
        except LayoutError as exc:
            raise CacheImportError(f"cache {exc}") from None

    manifest_desc = Descriptor.from_json(entries[-1])
    fetch(manifest_desc)
    manifest = store.read_json(manifest_desc.digest)
    config_desc = Descriptor.from_json(manifest["config"])
    if config_desc.media_type != CACHE_CONFIG_MEDIA_TYPE:
        raise CacheConfigError(f"{root}: {config_desc.media_type} is not a pybuild cache config")
    fetch(config_desc)
    config = CacheConfig.from_json(store.read_json(config_desc.digest), str(root))
    return ImportedCache(str(root), config, fetch)


class ImportingResults:
    """The solver's ResultStore: the local index first, then imported caches."""

    def __init__(self, local, caches: list[ImportedCache], worker, reporter):
        self._local = local
        self._caches = caches
        self._worker = worker
        self._reporter = reporter
        self.imported: list[str] = []  # keys served from an imported cache

    def lookup(self, key: str):
        hit = self._local.lookup(key)
        if hit is not None or not self._caches:
            return hit
        for cache in self._caches:
            record = cache.config.records.get(key)
            if record is None:
                continue
            layers = cache.config.chain_of(key)
            try:
                chain = tuple(self._materialise(cache, layer, layers[: i + 1]) for i, layer in enumerate(layers))
            except (RegistryError, CacheImportError, LayerMismatch, LayerTooLarge, DecompressionError) as exc:
                # The step can still run: a broken cache only costs time.
                self._reporter.warning(f"cache {cache.name}: {exc}; running the step instead")
                self._caches.remove(cache)
                return self.lookup(key)
            stored = self._worker.index.put_result(key, chain, created=record.created)
            self.imported.append(key)
            self._record_prefixes(cache, record, chain)
            return stored.chain
        return None

    def _record_prefixes(self, cache: ImportedCache, record, chain: tuple[str, ...]) -> None:
        """The steps below an imported one are on disk now as well: record
        them, so later builds (and a re-export) find them locally."""
        for other in cache.config.records.values():
            if other.key != record.key and record.chain[: len(other.chain)] == other.chain:
                self._worker.index.put_result(other.key, chain[: len(other.chain)], created=other.created)

    def record(self, key: str, result):
        return self._local.record(key, result)

    def created(self, key: str) -> float:
        return self._local.created(key)

    def _materialise(self, cache: ImportedCache, layer: CacheLayer, below: list[CacheLayer]) -> str:
        """The snapshot of `layer` on top of `below` (which ends with it)."""
        worker = self._worker
        cid = Digest.parse(chain_id([str(l.diff_id) for l in below]))
        snapshot = worker.index.get_base(cid)
        if snapshot is None or not worker.snapshots.exists(snapshot):
            check_layer_size(layer.descriptor, cache.max_layer_size, "the cache")
            cache.fetch(layer.descriptor)
            snapshot = extract_layer(worker.store, worker.index, worker.snapshots, layer.descriptor, layer.diff_id,
                                     cid, what="the cache", max_size=cache.max_layer_size)
        # "base:" marks the blob a snapshot came from: LayerMaker reuses it.
        desc = layer.descriptor
        record_key = f"base:{desc.digest}"
        if worker.index.get_layer(snapshot, record_key) is None:
            worker.index.put_layer(LayerRecord(snapshot, record_key, layer.diff_id, desc.digest, desc.size,
                                               desc.media_type, layer.empty))
        return snapshot


def restore_cache_mounts(caches: list[ImportedCache], worker, reporter) -> int:
    """Fill cache mount directories that this root does not have yet."""
    restored = 0
    base = worker.cache_mounts
    for cache in caches:
        for name, index in sorted(cache.config.mounts.items()):
            path = base / name
            if path.exists():
                continue  # local contents are newer than any import
            base.mkdir(parents=True, exist_ok=True)
            desc = cache.config.layers[index].descriptor
            # The same lock file as builder/ops/cachemount.py: a concurrent
            # build creating this cache waits for us, and we for it.
            fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if path.exists():
                    continue
                cache.fetch(desc)
                fresh = path.with_name(path.name + ".import")
                remove_tree(fresh, ignore_errors=True)
                fresh.mkdir()
                try:
                    with worker.store.open(desc.digest) as raw:
                        layer_tar.apply_layer(decompressing_reader(raw, Compression.GZIP), fresh)
                    os.replace(fresh, path)
                except BaseException:
                    remove_tree(fresh, ignore_errors=True)
                    raise
                restored += 1
            finally:
                os.close(fd)
    if restored:
        reporter.message(f"restored {restored} cache mount(s) from the imported cache")
    return restored
