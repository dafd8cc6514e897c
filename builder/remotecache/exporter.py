"""`--cache-to`: write this build's cache records where other machines find them.

What is exported (see builder/remotecache/config.py for the format):
- mode=min: every solved step whose result is a prefix of the final image's
  snapshot chain (the final stage's steps), with the final image's own
  layer blobs, so an importer's image has exactly the same layer digests;
- mode=max: every solved step's result, intermediate stages included;
- cache-mounts=true: the contents of the RUN --mount=type=cache directories
  this build used, one tar+gzip blob each (BuildKit never exports these).

Layer blobs are reused from the index (builder/export/layers.py); nothing is
re-tarred when the image was already exported.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from builder.remotecache.config import (CACHE_CONFIG_MEDIA_TYPE, CACHE_MOUNT_MEDIA_TYPE, INLINE_KEY, CacheConfig,
                                  CacheLayer)
from builder.remotecache.spec import CacheMode, CacheSpec, CacheType
from builder.export.compression import Compression, compressing_writer
from builder.errors import ExportError
from builder.image import OCI_INDEX, OCI_MANIFEST, REF_NAME_ANNOTATION, Descriptor, Image, canonical_json, store_oci_manifest
from builder.export.layers import LayerMaker
from builder.ops.cachemount import _instance_dir, held_for_export
from builder.registry.reference import Reference
from frontend import ops
from runtime import layer as layer_tar
from runtime.errors import RuntimeFailure


class CacheExporter:
    """Collects the records of one solved build and writes them out."""

    def __init__(self, worker, layers: LayerMaker, definition, solution, image: Image):
        self._worker = worker
        self._layers = layers
        self._definition = definition
        self._solution = solution
        # A snapshot's blob in the final image is the one to export, whatever
        # compression or timestamp rewriting made it, so that an importer's
        # image comes out with exactly the same layer digests.
        in_image = {d.digest for d in image.layers}
        self._by_snapshot: dict[str, CacheLayer] = {}
        for snapshot in solution.result:
            for record in worker.index.layers_of(snapshot):
                if record.digest in in_image and worker.store.has(record.digest):
                    self._by_snapshot[snapshot] = _cache_layer(record)
                    break

    @property
    def store(self):
        return self._worker.store

    def _layer(self, snapshot: str) -> CacheLayer:
        if snapshot not in self._by_snapshot:
            self._by_snapshot[snapshot] = _cache_layer(self._layers.layer_for(snapshot, Compression.GZIP))
        return self._by_snapshot[snapshot]

    def collect(self, mode: CacheMode, config: CacheConfig | None = None) -> CacheConfig:
        """This build's records, added to `config` (another platform's) when given."""
        config = config if config is not None else CacheConfig()
        final = tuple(self._solution.result)
        index = self._worker.index
        for vertex, key in self._solution.keys.items():
            cached = index.get_result(key)
            if cached is None or not cached.chain:
                continue  # sources without a filesystem are free to recompute
            chain = cached.chain
            if mode is CacheMode.MIN and final[: len(chain)] != chain:
                continue
            config.add_record(key, [self._layer(s) for s in chain], cached.created)
        return config

    def add_cache_mounts(self, config: CacheConfig, store, scratch: Path, reporter=None) -> None:
        """Tar the cache mount directories this build's RUN steps used."""
        base = self._worker.cache_mounts
        for name, cache_id in sorted(self._mount_dirs().items()):
            path = base / name
            if name in config.mounts or not path.is_dir():  # another platform's graph used it too
                continue
            waiting = None if reporter is None else (
                lambda: reporter.message(f"waiting for cache mount {cache_id!r}: a step of another build holds it"))
            # This build's steps are done; a `locked` step of another build
            # is waited for, a `shared` one may still write. The directory
            # is read as a live tree (runtime.layer): whatever such a step
            # swaps in, nothing outside the directory is ever read, and an
            # entry it removes meanwhile is left out, as tar would. A cache
            # mount is only ever a hint to the tools using it, so a torn
            # copy is acceptable.
            with held_for_export(path, waiting), store.writer() as blob:
                compressor = compressing_writer(blob, Compression.GZIP)
                try:
                    left_out = layer_tar.write_layer(path, _Flushable(compressor), live=True)
                except RuntimeFailure as exc:
                    raise ExportError(f"export cache mount {cache_id!r}: {exc}") from exc
                compressor.close()
                digest = blob.commit()
                size = blob.size
            if left_out and reporter is not None:
                reporter.message(f"cache mount {cache_id!r} changed while it was exported: "
                                 f"{left_out} entries left out")
            desc = Descriptor(CACHE_MOUNT_MEDIA_TYPE, digest, size)
            config.mounts[name] = config.add_layer(CacheLayer(desc, digest))

    def _mount_dirs(self) -> dict[str, str]:
        """Directory name under ROOT/cachemounts -> cache id."""
        names = {}
        graph = self._definition.graph
        for vertex in self._solution.keys:
            op = graph.nodes[vertex]["op"]
            if isinstance(op, ops.Exec):
                for mount in op.mounts:
                    if mount.type is ops.MountType.CACHE:
                        cache_id = mount.cache_id or mount.target
                        names[_instance_dir(Path("."), cache_id, 0).name] = cache_id
        return names


class _Flushable:
    """write_layer flushes its output; the compressor flushes on close."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, data) -> int:
        return self._inner.write(data)

    def flush(self) -> None:
        pass


def _cache_layer(record) -> CacheLayer:
    return CacheLayer(Descriptor(record.media_type, record.digest, record.size), record.diff_id, record.empty)


def cache_manifest(store, config: CacheConfig) -> Image:
    """Store the config and the OCI manifest that carries it; return both."""
    config_bytes = canonical_json(config.to_json())
    config_desc = Descriptor(CACHE_CONFIG_MEDIA_TYPE, store.put_bytes(config_bytes), len(config_bytes))
    layers = tuple(l.descriptor for l in config.layers)
    return Image(store_oci_manifest(store, config_desc, layers), config_desc, layers)


def export_cache(spec: CacheSpec, exporters: list[CacheExporter], session, reporter) -> None:
    """One --cache-to (registry or local; inline is `with_inline_cache`):
    one cache manifest whose config holds every exporter's (platform's) records."""
    store = session.store
    config = CacheConfig()
    for exporter in exporters:
        exporter.collect(spec.mode, config)
        if spec.cache_mounts:
            exporter.add_cache_mounts(config, store, session.tmp, reporter)
    artifact = cache_manifest(store, config)
    if spec.type is CacheType.REGISTRY:
        from builder.export.pushing import push_shown

        ref = Reference.parse(spec.ref)
        reporter.message(f"exporting cache to {ref} ({len(config.records)} records, {len(config.layers)} blobs)")
        push_shown(reporter, ref, artifact.manifest, lambda: session.registry.push(ref, artifact))
    elif spec.type is CacheType.LOCAL:
        reporter.message(f"exporting cache to {spec.path} ({len(config.records)} records)")
        write_cache_layout(store, artifact, Path(spec.path), spec.tag)


def write_cache_layout(store, artifact: Image, dest: Path, tag: str) -> None:
    """An OCI layout directory holding the cache manifest under `tag`.

    Blobs accumulate (other tags' caches stay usable); index.json is
    replaced atomically with this tag's entry updated."""
    try:
        blobs = dest / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for desc in (artifact.config, *artifact.layers, artifact.manifest):
            target = blobs / desc.digest.hex
            if target.exists() and target.stat().st_size == desc.size:
                continue
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=blobs)
            with os.fdopen(fd, "wb") as out, store.open(desc.digest) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, target)
        (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        index_path = dest / "index.json"
        entries = []
        if index_path.exists():
            entries = [m for m in json.loads(index_path.read_text()).get("manifests", [])
                       if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) != tag]
        entries.append(Descriptor(OCI_MANIFEST, artifact.manifest.digest, artifact.manifest.size,
                                  annotations={REF_NAME_ANNOTATION: tag}).to_json())
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest)
        with os.fdopen(fd, "wb") as out:
            out.write(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}))
        os.replace(tmp, index_path)
    except (OSError, ValueError) as exc:
        raise ExportError(f"failed to export cache to {dest}: {exc}") from exc


def with_inline_cache(store, image: Image, exporter: CacheExporter) -> Image:
    """The image with its cache records in its config (`type=inline`).

    Only records whose every layer is one of the image's own blobs can be
    served from the image alone."""
    config = exporter.collect(CacheMode.MIN)
    own = {d.digest for d in image.layers}
    inline = CacheConfig()
    for key, record in config.records.items():
        chain = [config.layers[i] for i in record.chain]
        if all(l.descriptor.digest in own for l in chain):
            inline.add_record(key, chain, record.created)
    body = store.read_json(image.config.digest)
    body[INLINE_KEY] = inline.to_json()
    config_bytes = canonical_json(body)
    config_desc = Descriptor(image.config.media_type, store.put_bytes(config_bytes), len(config_bytes))
    manifest = store.read_json(image.manifest.digest)
    manifest["config"] = config_desc.to_json()
    manifest_bytes = canonical_json(manifest)
    manifest_desc = Descriptor(image.manifest.media_type, store.put_bytes(manifest_bytes), len(manifest_bytes),
                               platform=image.manifest.platform)
    return Image(manifest_desc, config_desc, image.layers)
