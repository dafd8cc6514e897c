"""OCI image records: descriptors, manifests, configs, media types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

from cache.digest import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] | None = None
    platform: Mapping[str, str] | None = None

    def to_json(self) -> dict:
        body = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.annotations:
            body["annotations"] = dict(self.annotations)
        if self.platform:
            body["platform"] = dict(self.platform)
        return body

    @classmethod
    def from_json(cls, body: Mapping) -> "Descriptor":
        return cls(
            media_type=body["mediaType"],
            digest=Digest.parse(body["digest"]),
            size=int(body["size"]),
            annotations=body.get("annotations") or None,
            platform=body.get("platform") or None,
        )


@dataclass(frozen=True)
class Image:
    """A complete image whose manifest, config and layer blobs are all in the
    content store. `manifest` is the manifest's own descriptor."""

    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]


def canonical_json(body) -> bytes:
    """The bytes pybuild writes for every JSON blob: stable across runs."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def store_oci_manifest(store, config: Descriptor, layers) -> Descriptor:
    """Put the OCI manifest listing `config` and `layers` (all already in
    `store`) in the store; return its descriptor. The one writer of
    pybuild's own small OCI manifests: attestations, signatures, caches."""
    body = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_json(),
                           "layers": [layer.to_json() for layer in layers]})
    return Descriptor(OCI_MANIFEST, store.put_bytes(body), len(body))
