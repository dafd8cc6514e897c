"""Checking signatures as `cosign verify --key` does, without a
transparency log: a signature counts when it verifies over its payload's
bytes with the public key, and the payload names the image's manifest
digest and its repository."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from builder.registry.client import RegistryClient
from builder.registry.reference import Reference
from builder.signing.payload import Claims, docker_reference, read_payload
from builder.signing.store import StoredSignature, read_signatures, signature_image
from cache.digest import Digest
from cache.store import ContentStore


@dataclass(frozen=True)
class Verification:
    """The image's digest, the claims of each valid signature, and each
    other signature's layer with why it was refused."""

    digest: Digest
    valid: tuple[Claims, ...]
    rejected: tuple[tuple[StoredSignature, str], ...]


def resolve_digest(client: RegistryClient, ref: Reference) -> Digest:
    """The digest `ref` names in the registry: the one it pins (once the
    manifest is found to hash to it), else its tag's (an index's own
    digest when the tag names an index, as cosign signs it, whatever
    platforms the index lists)."""
    descriptor, _ = client.manifest(ref)
    return descriptor.digest


def signature_matches(key: ec.EllipticCurvePublicKey, payload: bytes, signature: str) -> bool:
    """Whether `signature` (base64 DER, as the annotation holds it) is
    `key`'s ECDSA-SHA256 signature of `payload`."""
    try:
        key.verify(base64.b64decode(signature, validate=True), payload, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def rejection(key: ec.EllipticCurvePublicKey, stored: StoredSignature, ref: Reference,
              digest: Digest) -> str | Claims:
    """The claims of a valid signature, else why it is not valid."""
    if stored.payload is None:
        return f"layer {stored.layer.digest} is not a simple-signing payload"
    if not stored.signature:
        return f"layer {stored.layer.digest} carries no signature"
    if not signature_matches(key, stored.payload, stored.signature):
        return "the signature does not match its payload with this key"
    try:
        claims = read_payload(stored.payload)
    except ValueError as exc:
        return str(exc)
    if claims.manifest_digest != digest:
        return f"the payload signs {claims.manifest_digest}, not {digest}"
    if not claims.names(ref):
        return f"the payload names {claims.docker_reference}, not {docker_reference(ref)}"
    return claims


def verify_image(client: RegistryClient, store: ContentStore, ref: Reference,
                 key: ec.EllipticCurvePublicKey) -> Verification:
    """Check every signature of the image `ref` names; the caller decides
    what no valid one means. Payloads land in `store`, verified by digest."""
    digest = resolve_digest(client, ref)
    valid, rejected = [], []
    for stored in read_signatures(client, store, signature_image(client, ref, digest)):
        outcome = rejection(key, stored, ref, digest)
        if isinstance(outcome, Claims):
            valid.append(outcome)
        else:
            rejected.append((stored, outcome))
    return Verification(digest, tuple(valid), tuple(rejected))
