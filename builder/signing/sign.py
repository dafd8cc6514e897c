"""Signing an image as `cosign sign --key` does, without a transparency
log: the simple-signing payload of the image's digest, signed with ECDSA
P-256 over SHA-256, appended to the digest's .sig image."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from builder.registry.client import RegistryClient
from builder.registry.reference import Reference
from builder.signing.payload import make_payload
from builder.signing.store import append_signature, read_signatures, signature_image
from builder.signing.verify import signature_matches
from cache.digest import Digest
from cache.store import ContentStore


@dataclass(frozen=True)
class Signed:
    """Where the signature is (the .sig image's reference) and whether it
    was added (False: this key had signed this payload already)."""

    signature_ref: Reference
    added: bool


def sign_image(client: RegistryClient, store: ContentStore, ref: Reference, digest: Digest,
               key: ec.EllipticCurvePrivateKey) -> Signed:
    """Sign the manifest (or index) `digest` of `ref`'s repository.

    The payload names the repository and the digest; a signature of the
    same payload by the same key already there is kept instead of adding
    another (ECDSA signatures differ each time, and cosign's duplicate
    check does the same).
    """
    payload = make_payload(ref, digest)
    image = signature_image(client, ref, digest)
    public = key.public_key()
    for stored in read_signatures(client, store, image):
        if stored.payload == payload and signature_matches(public, payload, stored.signature):
            return Signed(image.ref, False)
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    append_signature(client, store, image, payload, signature)
    return Signed(image.ref, True)
