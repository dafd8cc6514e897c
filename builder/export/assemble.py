"""Image config and manifest from a stage's definition and its snapshot chain."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass

from cache.digest import Digest
from builder import image as media
from builder.export.compression import Compression
from builder.errors import PybuildError
from builder.image import Descriptor, Image, canonical_json
from builder.export.layers import LayerMaker
from frontend.definition import StageImage


@dataclass(frozen=True)
class ExportOptions:
    """How one output wants the image: compression, media types, metadata.

    `rewrite_timestamp` clamps the mtimes of files in new layers to
    `source_date_epoch` (BuildKit's `rewrite-timestamp=true`); without it
    the epoch only sets `created` and the history times. `squash` merges
    the stage's new layers into one.
    """

    compression: Compression = Compression.GZIP
    compression_level: int | None = None
    force_compression: bool = False
    oci_mediatypes: bool = True
    source_date_epoch: int | None = None
    rewrite_timestamp: bool = False
    squash: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()             # on the manifest
    descriptor_annotations: tuple[tuple[str, str], ...] = ()  # on its descriptor (index.json)
    index_annotations: tuple[tuple[str, str], ...] = ()       # on an OCI layout's index.json

    def __post_init__(self):
        if self.compression is Compression.ZSTD and not self.oci_mediatypes:
            raise PybuildError("compression=zstd needs OCI media types: Docker's schema 2 has no zstd layer type "
                               "(drop oci-mediatypes=false)")
        level = self.compression_level
        if level is not None and not 0 <= level <= MAX_LEVEL[self.compression]:
            raise PybuildError(f"compression-level={level} is out of range for {self.compression.value} "
                               f"(0..{MAX_LEVEL[self.compression]})")


MAX_LEVEL = {Compression.GZIP: 9, Compression.ZSTD: 22, Compression.UNCOMPRESSED: 9}


def rfc3339(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment.microsecond else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def base_layer_count(stage: StageImage) -> int:
    if stage.base is None:
        return 0
    return len(stage.base.config.get("rootfs", {}).get("diff_ids", []))


class Assembler:
    """The images of one build, one per distinct `ExportOptions`.

    Each output may ask for its own compression, media types or
    annotations, so each gets its own config and manifest; they are cheap,
    since LayerMaker remembers every layer blob per compression and the
    images share them. Images are memoised per options.
    """

    def __init__(self, store, layers: LayerMaker, stage: StageImage, chain: tuple[str, ...],
                 created: float, defaults: ExportOptions, *, snapshots=None, tmp=None):
        self._args = (store, layers, stage, tuple(chain), created)
        self._snapshots = snapshots
        self._tmp = tmp
        self.defaults = defaults
        self._images: dict[ExportOptions, Image] = {}

    def image(self, options: ExportOptions | None = None) -> Image:
        options = options or self.defaults
        if options not in self._images:
            self._images[options] = assemble(*self._args, options, snapshots=self._snapshots, tmp=self._tmp)
        return self._images[options]


def assemble(store, layers: LayerMaker, stage: StageImage, chain: tuple[str, ...],
             created: float, options: ExportOptions, *, snapshots=None, tmp=None) -> Image:
    """Make (and store) the config and manifest of an image.

    The history entries of the new instructions with empty_layer=False pair
    up, in order, with the snapshots above the base image's layers. A
    step whose diff is empty (`RUN true`, WORKDIR of a directory that is
    there) keeps its empty layer, as BuildKit 0.13 does (docker 26 writes
    empty_layer false for it; docker 20.10's BuildKit dropped it).

    With SOURCE_DATE_EPOCH, `created` and every new history entry carry the
    epoch and older base entries are clamped to it, as BuildKit does.
    """
    epoch = options.source_date_epoch
    if epoch is not None:
        created = epoch
    clamp = epoch if options.rewrite_timestamp else None
    base_count = base_layer_count(stage)
    base_history_raw = list(stage.base.config.get("history", [])) if stage.base else []
    base_history = len(base_history_raw)
    # The base image's own entries are kept (created, author...), in the
    # form BuildKit re-encodes them.
    history = [_base_history_entry(h) for h in base_history_raw] + \
        [_history_json(h) for h in stage.history[base_history:]]
    new_entries = [h for h in history[base_history:] if not h.get("empty_layer")]
    new_snapshots = chain[base_count:]
    if len(new_entries) != len(new_snapshots):
        raise PybuildError(
            f"internal error: {len(new_snapshots)} new layers but {len(new_entries)} history entries")
    layer_descs, diff_ids = [], []
    for position, snapshot in enumerate(chain[:base_count]):
        record = layers.layer_for(snapshot, options.compression, force=options.force_compression,
                                  level=options.compression_level)
        layer_descs.append(Descriptor(_layer_type(record.media_type, options.oci_mediatypes),
                                      record.digest, record.size))
        diff_ids.append(str(record.diff_id))
    if options.squash and new_snapshots:
        from builder.export.squash import squash_layers

        records = [layers.layer_for(s, Compression.UNCOMPRESSED, clamp_mtime=clamp) for s in new_snapshots]
        for entry in new_entries:
            entry["empty_layer"] = True
        merged = squash_layers(store, records, options.compression, level=options.compression_level,
                               clamp_mtime=clamp, tmp=tmp)
        if merged is not None:
            layer_descs.append(Descriptor(_layer_type(merged.media_type, options.oci_mediatypes),
                                          merged.digest, merged.size))
            diff_ids.append(str(merged.diff_id))
            history.append({"created_by": f"pybuild --squash: {len(new_snapshots)} layers merged into one",
                            "comment": "squashed"})
    else:
        for position, snapshot in enumerate(new_snapshots):
            record = layers.layer_for(snapshot, options.compression, force=options.force_compression,
                                      clamp_mtime=clamp, level=options.compression_level)
            layer_descs.append(Descriptor(_layer_type(record.media_type, options.oci_mediatypes),
                                          record.digest, record.size))
            diff_ids.append(str(record.diff_id))
    stamp = rfc3339(created)
    for entry in history[base_history:]:
        entry["created"] = stamp
    if epoch is not None:
        for entry in history[:base_history]:
            when = _parse_rfc3339(entry.get("created"))
            if when is None or when > epoch:
                entry["created"] = stamp

    config = copy.deepcopy(dict(stage.config))
    if options.labels:
        labels = dict(config.setdefault("config", {}).get("Labels") or {})
        labels.update(options.labels)
        config["config"]["Labels"] = labels
    config["created"] = stamp
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = history
    config_bytes = canonical_json(config)
    config_type = media.OCI_CONFIG if options.oci_mediatypes else media.DOCKER_CONFIG
    config_desc = Descriptor(config_type, store.put_bytes(config_bytes), len(config_bytes))

    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST if options.oci_mediatypes else media.DOCKER_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in layer_descs],
    }
    if options.annotations and options.oci_mediatypes:
        # Docker's schema 2 has no annotations (export_options refuses them
        # when an output with Docker media types asks for them itself).
        manifest["annotations"] = dict(options.annotations)
    manifest_bytes = canonical_json(manifest)
    platform = {"os": config.get("os", "linux"), "architecture": config.get("architecture", "amd64")}
    if config.get("variant"):
        platform["variant"] = config["variant"]
    manifest_desc = Descriptor(manifest["mediaType"], store.put_bytes(manifest_bytes), len(manifest_bytes),
                               annotations=dict(options.descriptor_annotations) or None, platform=platform)
    return Image(manifest_desc, config_desc, tuple(layer_descs))


# ocispec.History: BuildKit decodes a base image's history into it, so any
# other member is dropped and every empty one (all are omitempty) left out.
_HISTORY_FIELDS = ("created", "created_by", "author", "comment", "empty_layer")


def _base_history_entry(entry) -> dict:
    if not isinstance(entry, dict):
        return {}
    return {k: entry[k] for k in _HISTORY_FIELDS if entry.get(k) not in (None, "", False)}


def _history_json(entry) -> dict:
    if isinstance(entry, dict):
        return entry
    body = {"created_by": entry.created_by}
    if entry.comment:
        body["comment"] = entry.comment
    if entry.empty_layer:
        body["empty_layer"] = True
    return body


_TO_DOCKER = {
    media.OCI_LAYER_GZIP: media.DOCKER_LAYER_GZIP,
    media.OCI_LAYER: media.DOCKER_LAYER,
}
_TO_OCI = {docker: oci for oci, docker in _TO_DOCKER.items()}


def _layer_type(media_type: str, oci: bool) -> str:
    """A layer's media type in the manifest's family: a base image's docker
    layers in an OCI manifest get OCI types, and the other way round."""
    if oci:
        return _TO_OCI.get(media_type, media_type)
    if media_type in (media.OCI_LAYER_ZSTD,):
        raise PybuildError("a base image layer is zstd-compressed: Docker media types have no zstd layer "
                           "(use oci-mediatypes=true, or force-compression=true with gzip)")
    return _TO_DOCKER.get(media_type, media_type)


def load_image(store, manifest_digest: Digest) -> Image:
    """The Image record of a manifest already in the store; of an index
    (a build for several platforms), this host's platform's image, else
    the first one's."""
    manifest_digest, body = stored_manifest(store, manifest_digest)
    return image_of_manifest(body, manifest_digest, store.size(manifest_digest))


def stored_manifest(store, digest: Digest) -> tuple[Digest, dict]:
    """The stored manifest `digest` names, read; for an index (a build for
    several platforms) its manifest for this host's platform, else its
    first one's."""
    body = store.read_json(digest)
    if "manifests" not in body or "config" in body:
        return digest, body
    from builder.registry.platforms import select_platform
    from frontend.ops import Platform

    entries = body.get("manifests") or []
    if not entries:
        raise PybuildError("the image index lists no manifest")
    chosen = select_platform(entries, Platform())
    digest = chosen.digest if chosen is not None else Digest.parse(entries[0]["digest"])
    return digest, store.read_json(digest)


def image_of_manifest(body: dict, manifest_digest: Digest, size: int) -> Image:
    """The Image record of a stored manifest already read (`body`), for a
    caller that needs the document too and so reads it once."""
    manifest = Descriptor(body.get("mediaType", media.OCI_MANIFEST), manifest_digest, size)
    return Image(manifest, Descriptor.from_json(body["config"]),
                 tuple(Descriptor.from_json(l) for l in body.get("layers", [])))
