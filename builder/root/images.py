"""The local image store: names in the index, manifests and configs as blobs."""

from __future__ import annotations

from dataclasses import dataclass

from builder.export.assemble import image_of_manifest, load_image, stored_manifest
from builder.errors import PybuildError
from builder.image import Image
from builder.registry.reference import Reference
from cache.errors import BlobNotFound


class ImageNotFound(PybuildError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"image not found: {name}")


@dataclass(frozen=True)
class StoredImage:
    name: str
    image: Image
    config: dict
    manifest: dict


def _normalise(name: str) -> str:
    return str(Reference.parse(name))


def find(worker, name: str) -> StoredImage:
    """An image by name (`app`, `app:1`, a full name) or by ID prefix."""
    digest = None
    try:
        digest = worker.index.get_image(_normalise(name))
    except PybuildError:
        pass
    if digest is None:
        wanted = name.removeprefix("sha256:")
        for stored_name, manifest_digest, _ in worker.index.images():
            image = load_image(worker.store, manifest_digest)
            if len(wanted) >= 4 and (image.config.digest.hex.startswith(wanted) or manifest_digest.hex.startswith(wanted)):
                digest, name = manifest_digest, stored_name
                break
    if digest is None or not worker.store.has(digest):
        raise ImageNotFound(name)
    try:
        digest, manifest = stored_manifest(worker.store, digest)
    except BlobNotFound:  # an index whose manifest for this host is gone
        raise ImageNotFound(name) from None
    image = image_of_manifest(manifest, digest, worker.store.size(digest))
    return StoredImage(name, image, worker.store.read_json(image.config.digest), manifest)


def resolve_now(worker, registry, ref: Reference, platform: str):
    """Ask the registry what `ref` names now. A tag's answer becomes the one
    this root's FROM, COPY --from and memo read until the next `--pull` or
    `pybuild pull`: a pull that left it behind would keep building the old
    image from a cache while a fresh root builds the new one."""
    resolved = registry.resolve(ref, platform)
    if ref.digest is None:
        worker.index.put_resolved(str(ref), platform, resolved.manifest.digest)
    return resolved


def tag(worker, source: str, target: str) -> str:
    stored = find(worker, source)
    name = _normalise(target)
    worker.index.put_image(name, stored.image.manifest.digest)
    return name


def remove(worker, name: str) -> str:
    normalised = _normalise(name)
    if not worker.index.remove_image(normalised):
        raise ImageNotFound(name)
    return normalised


def history(stored: StoredImage) -> list[dict]:
    """Newest first, as `docker history` lists them, with each layer's size."""
    layers = list(stored.image.layers)
    rows = []
    for entry in stored.config.get("history", []):
        size = 0
        if not entry.get("empty_layer") and layers:
            size = layers.pop(0).size
        rows.append({"created": entry.get("created", ""), "created_by": entry.get("created_by", ""),
                     "size": size, "comment": entry.get("comment", "")})
    return list(reversed(rows))


def _gzipped_from_snapshot(worker, digest):
    """(digest, size) of the gzip layer made straight from the snapshot a
    lazy layer names (once: the index remembers it), or None. Never writes
    the uncompressed bytes that nothing else needs."""
    from builder.export.compression import Compression
    from builder.root.lock import RootLock
    from builder.export.layers import LayerMaker

    with RootLock(worker.root, exclusive=False, reentrant=True):  # prune keeps the snapshot meanwhile
        recipe = worker.store.recipe(digest) if worker.store.is_lazy(digest) else None
        if recipe is None or not worker.store.materializer.available(recipe):
            return None
        maker = LayerMaker(worker.store, worker.index, worker.snapshots)
        record = maker.layer_for(recipe["snapshot"], Compression.GZIP, clamp_mtime=recipe["clamp_mtime"])
    return (record.digest, record.size) if record.diff_id == digest else None


def compressed_for_push(worker, image: Image) -> Image:
    """The image as a registry should get it: the local store keeps new
    layers uncompressed, so those are gzipped (once; the blob is kept) and
    a manifest listing the gzip blobs is made. The config, and so the image
    ID, stays the same."""

    from builder.export.compression import Compression, compressing_writer
    from builder.image import OCI_LAYER, DOCKER_LAYER, Descriptor, canonical_json

    if not any(layer.media_type in (OCI_LAYER, DOCKER_LAYER) for layer in image.layers):
        return image
    layers = []
    for layer in image.layers:
        if layer.media_type not in (OCI_LAYER, DOCKER_LAYER):
            layers.append(layer)
            continue
        oci = layer.media_type == OCI_LAYER
        from_snapshot = _gzipped_from_snapshot(worker, layer.digest)
        if from_snapshot is not None:
            layers.append(Descriptor(Compression.GZIP.media_type(oci), *from_snapshot))
            continue
        with worker.store.open(layer.digest) as raw, worker.store.writer() as blob:
            gzip = compressing_writer(blob, Compression.GZIP)
            for chunk in iter(lambda: raw.read(1 << 20), b""):
                gzip.write(chunk)
            gzip.close()
            digest = blob.commit()
            size = blob.size
        layers.append(Descriptor(Compression.GZIP.media_type(oci), digest, size))
    manifest = worker.store.read_json(image.manifest.digest)
    manifest["layers"] = [layer.to_json() for layer in layers]
    raw_manifest = canonical_json(manifest)
    descriptor = Descriptor(image.manifest.media_type, worker.store.put_bytes(raw_manifest), len(raw_manifest),
                            platform=image.manifest.platform)
    return Image(descriptor, image.config, tuple(layers))
