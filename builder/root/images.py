"""The local image store: names in the index, manifests and configs as blobs."""

from __future__ import annotations

from dataclasses import dataclass

from builder.export.assemble import image_of_manifest, load_image, stored_manifest
from builder.errors import PybuildError
from builder.image import MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, Descriptor, Image, canonical_json
from builder.registry.platforms import no_match, select_platform
from builder.registry.reference import Reference
from cache.digest import Digest
from cache.errors import BlobNotFound
from frontend.ops import Platform


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


@dataclass(frozen=True)
class StoredIndex:
    """An image index kept under a name: a build for several platforms."""

    name: str
    descriptor: Descriptor
    body: dict

    def image_entries(self) -> list[dict]:
        """The index's entries that are image manifests (not nested indexes)."""
        return [entry for entry in self.body.get("manifests") or []
                if entry.get("mediaType", OCI_MANIFEST) in MANIFEST_TYPES]


def _normalise(name: str) -> str:
    return str(Reference.parse(name))


def _lookup(worker, name: str) -> tuple[str, Digest]:
    """The name and stored digest (manifest or index) of an image given by
    name (`app`, `app:1`, a full name) or by ID prefix."""
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
    return name, digest


def find(worker, name: str, platform: Platform | None = None) -> StoredImage:
    """An image by name or ID prefix; of an index, `platform`'s image (an
    error naming the index's platforms when it has none), else this host's,
    else its first."""
    name, digest = _lookup(worker, name)
    try:
        if platform is None:
            digest, manifest = stored_manifest(worker.store, digest)
        else:
            digest, manifest = _platform_manifest(worker, name, digest, platform)
    except BlobNotFound:  # an index whose manifest for this platform is gone
        raise ImageNotFound(name) from None
    image = image_of_manifest(manifest, digest, worker.store.size(digest))
    return StoredImage(name, image, worker.store.read_json(image.config.digest), manifest)


def _platform_manifest(worker, name: str, digest: Digest, platform: Platform) -> tuple[Digest, dict]:
    body = worker.store.read_json(digest)
    if "manifests" in body and "config" not in body:
        entries = body["manifests"] or []
    else:  # one image: it must be of that platform (docker history --platform)
        config = worker.store.read_json(Digest.parse(body["config"]["digest"]))
        entries = [{"mediaType": body.get("mediaType", OCI_MANIFEST), "digest": str(digest), "size": 1,
                    "platform": {key: config[key] for key in ("os", "architecture", "variant") if config.get(key)}}]
    chosen = select_platform(entries, platform)
    if chosen is None:
        raise PybuildError(f"{name}: {no_match(entries, platform)}")
    return chosen.digest, worker.store.read_json(chosen.digest)


def find_index(worker, name: str) -> StoredIndex | None:
    """The index a name (or ID prefix) keeps, or None when it keeps one image."""
    name, digest = _lookup(worker, name)
    body = worker.store.read_json(digest)
    if "manifests" not in body or "config" in body:
        return None
    descriptor = Descriptor(body.get("mediaType") or OCI_INDEX, digest, worker.store.size(digest))
    return StoredIndex(name, descriptor, body)


def index_summary(worker, index: StoredIndex) -> dict:
    """`pybuild inspect` of an index: the index itself, and for each image
    it lists (as `docker buildx imagetools inspect` shows them) its
    platform, digests, size and its config without the layer list."""
    images = []
    for entry in index.image_entries():
        platform = entry.get("platform") or {}
        row = {"Platform": "/".join(filter(None, (platform.get(k) for k in ("os", "architecture", "variant")))),
               "Digest": entry["digest"], "MediaType": entry.get("mediaType", OCI_MANIFEST)}
        digest = Digest.parse(entry["digest"])
        if worker.store.has(digest):
            image = image_of_manifest(worker.store.read_json(digest), digest, entry["size"])
            config = worker.store.read_json(image.config.digest)
            row.update({"Id": str(image.config.digest), "Size": sum(layer.size for layer in image.layers),
                        "Config": {key: value for key, value in config.items() if key != "rootfs"}})
        images.append(row)
    return {"Name": index.name, "Digest": str(index.descriptor.digest), "MediaType": index.descriptor.media_type,
            "Index": index.body, "Manifests": images}


def index_for_push(worker, index: StoredIndex) -> tuple[list[Image], Descriptor]:
    """The images of a stored index as a registry should get them
    (compressed_for_push each) and the index listing them: the stored one
    when no image changed, else one with the new manifests' digests, the
    entries' platforms and annotations kept. The attestation manifest of an
    image whose manifest changed is made again about the new one (its
    statements' subjects and its reference annotation), so that what is
    pushed stays bound to what it describes."""
    from builder.attest.manifests import REFERENCE_DIGEST, is_attestation, rebind_attestation

    listed = index.body.get("manifests") or []
    moved: dict[str, tuple[Descriptor, Descriptor]] = {}
    pushed: dict[int, Image] = {}
    for position, entry in enumerate(listed):
        if entry.get("mediaType", OCI_MANIFEST) not in MANIFEST_TYPES:
            raise PybuildError(f"cannot push {index.name}: the index lists a nested index {entry['digest']}")
        if is_attestation(entry):
            continue
        digest = Digest.parse(entry["digest"])
        image = compressed_for_push(worker, image_of_manifest(worker.store.read_json(digest), digest, entry["size"]))
        pushed[position] = image
        if image.manifest.digest != digest:
            moved[str(digest)] = (Descriptor.from_json(entry), image.manifest)
    images, entries = [], []
    for position, entry in enumerate(listed):
        image = pushed.get(position)
        if image is None:
            old = Descriptor.from_json(entry)
            subject = moved.get((old.annotations or {}).get(REFERENCE_DIGEST, ""))
            found = rebind_attestation(worker.store, old, *subject) if subject else old
            image = image_of_manifest(worker.store.read_json(found.digest), found.digest, found.size)
            entry = dict(entry, annotations=dict(found.annotations or {}))
        images.append(image)
        entries.append(dict(entry, digest=str(image.manifest.digest), size=image.manifest.size))
    if not moved:
        return images, index.descriptor
    data = canonical_json(dict(index.body, manifests=entries))
    return images, Descriptor(index.descriptor.media_type, worker.store.put_bytes(data), len(data))


def resolve_now(worker, registry, ref: Reference, platform: str):
    """Ask the registry what `ref` names now. A tag's answer becomes the one
    this root's FROM, COPY --from and memo read until the next `--pull` or
    `pybuild pull`: a pull that left it behind would keep building the old
    image from a cache while a fresh root builds the new one."""
    resolved = registry.resolve(ref, platform)
    if ref.digest is None:
        worker.index.put_resolved(str(ref), platform, resolved.manifest.digest)
        # What the name itself named (an index for a multi-platform image):
        # the provenance's material (builder.solver.resolver).
        worker.index.put_resolved_name(str(ref), resolved.ref.digest or resolved.manifest.digest)
    return resolved


def tag(worker, source: str, target: str) -> str:
    """Another name for what `source` names: its image, or its whole index."""
    _, digest = _lookup(worker, source)
    worker.store.read_json(digest)  # a document damaged on disk gets no new name
    name = _normalise(target)
    worker.index.put_image(name, digest)
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
    from builder.image import OCI_LAYER, DOCKER_LAYER

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
