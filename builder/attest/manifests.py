"""Attestation manifests, stored as BuildKit stores them: one OCI manifest
per platform image, whose layers are in-toto statements, listed in the
image index after the images with platform unknown/unknown (so that docker,
skopeo and containerd pulling by platform never pick it) and annotations
naming the image manifest it describes.

Measured with docker 26 (BuildKit 0.13), `--provenance=mode=max --push`:

    index.manifests: [image amd64, image arm64, att(amd64), att(arm64)]
    att entry: {"mediaType": OCI manifest, "platform": {"architecture":
      "unknown", "os": "unknown"}, "annotations": {
      "vnd.docker.reference.digest": <image manifest digest>,
      "vnd.docker.reference.type": "attestation-manifest"}}
    att manifest: config application/vnd.oci.image.config.v1+json, body
      {"architecture":"unknown","os":"unknown","config":{},"rootfs":
      {"type":"layers","diff_ids":[<each layer's digest>]}}; layers
      application/vnd.in-toto+json, uncompressed, each annotated
      "in-toto.io/predicate-type": <its predicate type>; no annotations of
      its own.

BuildKit indents its manifests; pybuild writes every JSON blob in its one
canonical form, so digests differ while every field is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from builder.image import INDEX_TYPES, OCI_CONFIG, Descriptor, canonical_json, store_oci_manifest

if TYPE_CHECKING:
    from cache.store import ContentStore

IN_TOTO = "application/vnd.in-toto+json"
PREDICATE_TYPE_ANNOTATION = "in-toto.io/predicate-type"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
UNKNOWN_PLATFORM = {"architecture": "unknown", "os": "unknown"}


@dataclass(frozen=True)
class Statement:
    """One in-toto statement's bytes and its predicate type."""

    body: bytes
    predicate_type: str


def store_attestation_manifest(store: ContentStore, statements: Sequence[Statement],
                               subject: Descriptor) -> Descriptor:
    """Put the statements, the config and the manifest in the store; return
    the manifest's index entry, which names `subject` (the image manifest)."""
    if not statements:
        raise ValueError("an attestation manifest needs at least one statement")
    layers = []
    for item in statements:
        digest = store.put_bytes(item.body)
        layers.append(Descriptor(IN_TOTO, digest, len(item.body),
                                 annotations={PREDICATE_TYPE_ANNOTATION: item.predicate_type}))
    config_bytes = canonical_json({"architecture": "unknown", "os": "unknown", "config": {},
                                   "rootfs": {"type": "layers", "diff_ids": [str(l.digest) for l in layers]}})
    config = Descriptor(OCI_CONFIG, store.put_bytes(config_bytes), len(config_bytes))
    manifest = store_oci_manifest(store, config, layers)
    return replace(manifest, annotations={REFERENCE_DIGEST: str(subject.digest),
                                          REFERENCE_TYPE: ATTESTATION_MANIFEST},
                   platform=dict(UNKNOWN_PLATFORM))


def rebind_attestation(store: ContentStore, attestation: Descriptor, old: Descriptor, new: Descriptor
                       ) -> Descriptor:
    """The attestation manifest `attestation` made again about `new`, the
    image manifest that replaces `old` (its layers compressed for a push):
    each statement's subjects naming `old` name `new`, the rest of every
    statement unchanged. Returns the new manifest's index entry."""
    import json

    statements = []
    for item in read_statements(store, attestation):
        body = json.loads(item.body)
        for subject in body.get("subject") or ():
            digest = subject.get("digest") if isinstance(subject, dict) else None
            if isinstance(digest, dict) and digest.get(old.digest.algorithm) == old.digest.hex:
                subject["digest"] = {new.digest.algorithm: new.digest.hex}
        statements.append(Statement(canonical_json(body), item.predicate_type))
    rebuilt = store_attestation_manifest(store, statements, new)
    extra = {k: v for k, v in (attestation.annotations or {}).items() if k not in rebuilt.annotations}
    return replace(rebuilt, annotations={**extra, **rebuilt.annotations})


def index_manifests(images: Iterable[Descriptor], attestations: Iterable[Descriptor]) -> list[Descriptor]:
    """An index's entries in BuildKit's order: every image, then the
    attestation manifests in the order of the images they describe."""
    images = list(images)
    by_subject = {a.annotations[REFERENCE_DIGEST]: a for a in attestations}
    extra = set(by_subject) - {str(i.digest) for i in images}
    if extra:
        raise ValueError(f"attestation for an image not in the index: {sorted(extra)[0]}")
    return images + [by_subject[str(i.digest)] for i in images if str(i.digest) in by_subject]


def is_attestation(entry: Descriptor | Mapping) -> bool:
    annotations = entry.annotations if isinstance(entry, Descriptor) else entry.get("annotations")
    return (annotations or {}).get(REFERENCE_TYPE) == ATTESTATION_MANIFEST


def attestations_by_subject(index: Mapping) -> dict[str, Descriptor]:
    """An index body's attestation entries, keyed by the image manifest digest they describe."""
    if index.get("mediaType") not in INDEX_TYPES and "manifests" not in index:
        return {}
    found = {}
    for entry in index.get("manifests") or ():
        if is_attestation(entry):
            descriptor = Descriptor.from_json(entry)
            found[descriptor.annotations[REFERENCE_DIGEST]] = descriptor
    return found


def read_statements(store: ContentStore, attestation: Descriptor) -> list[Statement]:
    """The statements of a stored attestation manifest, in layer order."""
    manifest = store.read_json(attestation.digest)
    statements = []
    for layer in manifest.get("layers") or ():
        descriptor = Descriptor.from_json(layer)
        if descriptor.media_type != IN_TOTO:
            continue
        kind = (descriptor.annotations or {}).get(PREDICATE_TYPE_ANNOTATION, "")
        statements.append(Statement(store.read_bytes(descriptor.digest), kind))
    return statements
