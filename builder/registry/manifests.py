"""Manifests and indexes as a registry sends them: the types asked for,
the size allowed, the digest each must hash to and the type it turns out
to be; and what resolving a name gives back (ResolvedManifest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from builder.errors import RegistryError
from builder.image import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Image,
)
from builder.registry.reference import Reference
from builder.registry.transport import json_object
from cache.digest import Digest
from cache.errors import InvalidDigest

# Accepting all four lets the registry answer with whatever it stores
# instead of converting (or refusing, for an OCI index asked as docker).
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
# containerd's limit: a manifest is metadata, never megabytes.
MAX_MANIFEST_SIZE = 4 << 20
# An image config is metadata too. containerd and BuildKit read one whole
# with no limit; containers/image (Podman, CRI-O, skopeo) refuses one over
# 4 MiB (MaxConfigBodySize), which years of real images have stayed under.
MAX_CONFIG_SIZE = 4 << 20


@dataclass(frozen=True)
class ResolvedManifest:
    """A name resolved to one platform's image, manifest and config stored.

    `ref` is the name pinned to the digest it resolved to (the index's when
    the name points at an index, as `docker pull` reports), `index` the
    index's descriptor when there was one.
    """

    ref: Reference
    manifest: Descriptor
    manifest_json: dict
    config: Descriptor
    config_json: dict
    layers: tuple[Descriptor, ...]
    index: Descriptor | None = None

    @property
    def image(self) -> Image:
        return Image(self.manifest, self.config, self.layers)


def verified_manifest(data: bytes, obj: str, expected: Descriptor | None, headers: Mapping[str, str],
                      what: str) -> tuple[Digest, str, dict]:
    """The digest, media type and body of a manifest or index fetched as
    `obj` (a tag or digest), once its bytes hash to what was asked for:
    `expected`'s digest and size (an index's entry), the digest named, or
    for a tag the registry's Docker-Content-Digest header (`headers` are
    the response's). RegistryError otherwise, naming `what`."""
    header_digest = headers.get("Docker-Content-Digest")
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    # What we asked for by digest must hash to it; for a tag, the
    # registry's Docker-Content-Digest is the best claim there is.
    try:
        if expected is not None:
            claimed = expected.digest
        elif obj.startswith(("sha256:", "sha512:")):
            claimed = Digest.parse(obj)
        elif header_digest:
            claimed = Digest.parse(header_digest)
        else:
            claimed = Digest.of_bytes(data)
    except InvalidDigest as exc:
        raise RegistryError(f"{what}: registry sent an invalid digest: {exc}") from exc
    actual_hash = claimed.hasher()
    actual_hash.update(data)
    if actual_hash.hexdigest() != claimed.hex:
        raise RegistryError(f"{what}: manifest does not match its digest {claimed}")
    if expected is not None and len(data) != expected.size:
        raise RegistryError(f"{what}: manifest {claimed} has {len(data)} bytes, expected {expected.size}")
    try:
        body = json_object(data)
    except ValueError as exc:
        raise RegistryError(f"{what}: manifest is not valid JSON: {exc}") from exc
    media_type = body.get("mediaType") or content_type
    if media_type not in MANIFEST_TYPES + INDEX_TYPES:
        # An OCI manifest may omit mediaType; its shape tells.
        if "manifests" in body:
            media_type = OCI_INDEX
        elif "config" in body and "layers" in body:
            media_type = OCI_MANIFEST
        else:
            raise RegistryError(f"{what}: unsupported manifest type {media_type or 'unknown'}")
    return claimed, media_type, body
