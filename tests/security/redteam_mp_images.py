"""Crafted image indexes for the multi-platform red-team tests
(test_redteam_multiplatform.py): each entry's descriptor platform is
written as the attacker likes, independently of the config the manifest
points at, and every image carries a file `/which` naming it, so a test
reads back which manifest pybuild took for which platform without running
anything. Written with the busybox fixture's layout helpers and pushed
with skopeo (`--all`, digests preserved), as the registry would serve them."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from cache.digest import Digest
from fixtures.busybox import OCI_INDEX, OCI_MANIFEST, busybox_layer_tar, put_blob, skopeo_push, write_image, write_index

_NAMES = itertools.count(1)


@dataclass
class Entry:
    """One manifest of a crafted index: `platform` is what its descriptor
    says (None: no platform field), `config_arch` what its config says."""

    marker: str
    platform: dict | None
    config_arch: str = "amd64"
    with_busybox: bool = False
    annotations: dict = field(default_factory=dict)


def marker_layer(text: str) -> bytes:
    """A layer holding only /which (text + newline)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = (text + "\n").encode()
        info = tarfile.TarInfo("which")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def push_index(registry, layout: Path, entries: list[Entry]) -> str:
    """Write the images and an OCI index listing them in this order, push
    it as a new repository; returns its reference."""
    layout.mkdir(parents=True, exist_ok=True)
    manifests = []
    for entry in entries:
        tars = ([busybox_layer_tar()] if entry.with_busybox else []) + [marker_layer(entry.marker)]
        image = write_image(layout, tars, arch=entry.config_arch)
        descriptor = {"mediaType": OCI_MANIFEST, "digest": str(image.manifest), "size": image.manifest_size}
        if entry.platform is not None:
            descriptor["platform"] = entry.platform
        if entry.annotations:
            descriptor["annotations"] = entry.annotations
        manifests.append(descriptor)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                      sort_keys=True, separators=(",", ":")).encode()
    index = put_blob(layout, body)
    write_index(layout, OCI_INDEX, Digest.parse(index["digest"]), index["size"], "latest")
    ref = f"{registry.host}/redteam-mp-{next(_NAMES)}-{layout.name.lower()}"[:80].rstrip("-_.") + ":latest"
    skopeo_push(layout, "latest", ref, all_images=True)
    return ref


def push_single(registry, layout: Path, marker: str, config_arch: str) -> str:
    """One image, no index: its config names `config_arch` and nothing else does."""
    layout.mkdir(parents=True, exist_ok=True)
    image = write_image(layout, [marker_layer(marker)], arch=config_arch)
    write_index(layout, OCI_MANIFEST, image.manifest, image.manifest_size, "latest")
    ref = f"{registry.host}/redteam-mp-{next(_NAMES)}-{layout.name.lower()}"[:80].rstrip("-_.") + ":latest"
    skopeo_push(layout, "latest", ref)
    return ref
