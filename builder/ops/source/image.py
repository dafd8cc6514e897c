"""FROM <image>: a base image's layers, pulled and extracted once per root."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Sequence

from builder.errors import RegistryError
from builder.image import Descriptor
from builder.export.layers import check_layer_size, extract_layer
from builder.registry.reference import Reference
from builder.solver.scheduler import Cancelled
from cache.digest import Digest
from cache.errors import InvalidDigest
from cache.index import LayerRecord
from builder.solver.keys import CacheKey, cache_key
from cache.keys import chain_id
from frontend.ops import ImageSource, Op

if TYPE_CHECKING:
    from builder.solver.session import BuildSession

PULL_WORKERS = 4


class ImageImpl:
    """Pulls the layers of a pinned image and extracts each one, once per
    chain ID, into a snapshot that every build of the root shares."""

    def __init__(self, op: ImageSource, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        self.op = op
        self.vertex = vertex
        self.session = session

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        return cache_key(self.op.canonical(), input_keys)

    def execute(self, inputs, cancel: threading.Event):
        store = self.session.store
        ref = Reference.parse(self.op.ref)
        manifest_digest = ref.digest
        if not store.has(manifest_digest):
            self.session.images.resolve_manifest(ref, self.op.platform)
        # Both type-checked already: the frontend pinned this manifest through
        # ImageResolver.resolve_image, which checks what it reads, store or not.
        manifest = store.read_json(manifest_digest)
        config = store.read_json(Digest.parse(manifest["config"]["digest"]))
        diff_ids = config["rootfs"]["diff_ids"]
        layers = [Descriptor.from_json(l) for l in manifest.get("layers") or ()]
        if len(diff_ids) != len(layers):
            raise_mismatch(ref, len(layers), len(diff_ids))
        chain_ids = [Digest.parse(chain_id(diff_ids[: n + 1])) for n in range(len(diff_ids))]
        extracted = [self._extracted(cid) for cid in chain_ids]
        missing = [desc for desc, snapshot in zip(layers, extracted) if snapshot is None]
        for desc in missing:
            check_layer_size(desc, self._max_layer_size(), f"image {ref}")
        from concurrent.futures import ThreadPoolExecutor  # only a pull pays for it

        chain = []
        # Blobs download in parallel (bounded); layers extract in order as
        # soon as their blob is there, so extraction overlaps the downloads.
        with ThreadPoolExecutor(max_workers=PULL_WORKERS, thread_name_prefix="pybuild-pull") as pool:
            downloads = {desc.digest: pool.submit(self._fetch, ref, desc, cancel) for desc in missing}
            try:
                for desc, diff_id, cid, snapshot in zip(layers, diff_ids, chain_ids, extracted):
                    if snapshot is None:
                        downloads[desc.digest].result()
                        if cancel.is_set():
                            raise Cancelled()
                        snapshot = self._extract(ref, desc, diff_id, cid)
                    self._remember_blob(snapshot, desc, diff_id)
                    chain.append(snapshot)
            except BaseException:
                for future in downloads.values():
                    future.cancel()
                raise
        return tuple(chain)

    def _extracted(self, cid: Digest) -> str | None:
        snapshot = self.session.index.get_base(cid)
        return snapshot if snapshot is not None and self.session.snapshots.exists(snapshot) else None

    def _fetch(self, ref, desc: Descriptor, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise Cancelled()
        self.session.registry.fetch_blob(ref, desc, progress=self.session.reporter.progress_hook(self.vertex))

    def _max_layer_size(self) -> int | None:
        limits = self.session.options.size_limits
        return limits.max_layer_size if limits is not None else None

    def _extract(self, ref, desc: Descriptor, diff_id: str, cid: Digest) -> str:
        """The layer's snapshot, made only if its content is the diff_id the
        image's config claims (builder.export.layers.extract_layer)."""
        session = self.session
        try:
            expected = Digest.parse(diff_id)
        except InvalidDigest:
            raise RegistryError(f"image {ref}: its config has an invalid diff_id {diff_id!r}") from None
        return extract_layer(session.store, session.index, session.snapshots, desc, expected, cid,
                             what=f"image {ref}", max_size=self._max_layer_size())

    def _remember_blob(self, snapshot: str, desc: Descriptor, diff_id: str) -> None:
        store, index = self.session.store, self.session.index
        if not store.has(desc.digest):
            # The layer was extracted before from another blob of the same
            # diff_id (the image pushed again elsewhere, gzipped anew): this
            # one was never fetched, so the index must not claim it.
            return
        key = f"base:{desc.digest}"
        if index.get_layer(snapshot, key) is None:
            index.put_layer(LayerRecord(snapshot, key, Digest.parse(diff_id), desc.digest, desc.size,
                                               desc.media_type, False))


def raise_mismatch(ref, layers: int, diff_ids: int):
    raise RegistryError(f"image {ref}: manifest lists {layers} layers but its config {diff_ids} diff_ids")
