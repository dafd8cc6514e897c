"""Image config and manifest from a stage's definition and its snapshot chain."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass

from cache.digest import Digest
from builder import image as media
from builder.compression import Compression
from builder.errors import PybuildError
from builder.image import Descriptor, Image, canonical_json
from builder.layers import LayerMaker
from frontend.definition import StageImage


@dataclass(frozen=True)
class ExportOptions:
    compression: Compression = Compression.GZIP
    compression_level: int | None = None
    force_compression: bool = False
    oci_mediatypes: bool = True
    source_date_epoch: int | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


def rfc3339(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment.microsecond else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def base_layer_count(stage: StageImage) -> int:
    if stage.base is None:
        return 0
    return len(stage.base.config.get("rootfs", {}).get("diff_ids", []))


def assemble(store, layers: LayerMaker, stage: StageImage, chain: tuple[str, ...],
             created: float, options: ExportOptions) -> Image:
    """Make (and store) the config and manifest of an image.

    The history entries of the new instructions with empty_layer=False pair
    up, in order, with the snapshots above the base image's layers. A new
    layer whose diff is empty is dropped and its entry marked empty_layer,
    as BuildKit does, so a metadata-only RUN does not add a blob.
    """
    epoch = options.source_date_epoch
    if epoch is not None:
        created = min(created, epoch) if created else epoch
    base_count = base_layer_count(stage)
    base_history_raw = list(stage.base.config.get("history", [])) if stage.base else []
    base_history = len(base_history_raw)
    # The base image's own entries are kept as they were (created, author...).
    history = [dict(h) for h in base_history_raw] + [_history_json(h) for h in stage.history[base_history:]]
    new_entries = [h for h in history[base_history:] if not h.get("empty_layer")]
    new_snapshots = chain[base_count:]
    if len(new_entries) != len(new_snapshots):
        raise PybuildError(
            f"internal error: {len(new_snapshots)} new layers but {len(new_entries)} history entries")
    layer_descs, diff_ids = [], []
    for position, snapshot in enumerate(chain):
        is_new = position >= base_count
        record = layers.layer_for(
            snapshot, options.compression, force=options.force_compression,
            clamp_mtime=epoch if is_new else None, level=options.compression_level)
        if is_new and record.empty:
            new_entries[position - base_count]["empty_layer"] = True
            continue
        media_type = record.media_type
        if not options.oci_mediatypes:
            media_type = _docker_layer_type(media_type)
        layer_descs.append(Descriptor(media_type, record.digest, record.size))
        diff_ids.append(str(record.diff_id))
    stamp = rfc3339(created)
    for entry in history[base_history:]:
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
        manifest["annotations"] = dict(options.annotations)
    manifest_bytes = canonical_json(manifest)
    manifest_desc = Descriptor(manifest["mediaType"], store.put_bytes(manifest_bytes), len(manifest_bytes),
                               platform={"os": config.get("os", "linux"), "architecture": config.get("architecture", "amd64")})
    return Image(manifest_desc, config_desc, tuple(layer_descs))


def _history_json(entry) -> dict:
    if isinstance(entry, dict):
        return entry
    body = {"created_by": entry.created_by}
    if entry.comment:
        body["comment"] = entry.comment
    if entry.empty_layer:
        body["empty_layer"] = True
    return body


def _docker_layer_type(media_type: str) -> str:
    return {
        media.OCI_LAYER_GZIP: media.DOCKER_LAYER_GZIP,
        media.OCI_LAYER: media.DOCKER_LAYER,
    }.get(media_type, media_type)


def load_image(store, manifest_digest: Digest) -> Image:
    """The Image record of a manifest already in the store."""
    import json

    raw = store.read_bytes(manifest_digest)
    body = json.loads(raw)
    manifest = Descriptor(body.get("mediaType", media.OCI_MANIFEST), manifest_digest, len(raw))
    return Image(manifest, Descriptor.from_json(body["config"]),
                 tuple(Descriptor.from_json(l) for l in body.get("layers", [])))
