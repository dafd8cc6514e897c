"""Signatures in the registry, as cosign keeps them: the signatures of
`repo@sha256:<hex>` are the image tagged `repo:sha256-<hex>.sig`, an OCI
manifest with one layer per signature. A layer is the simple-signing
payload (builder.signing.payload), its annotation
`dev.cosignproject.cosign/signature` the base64 ECDSA signature of the
payload's bytes. The config lists the layers as diff_ids, as
go-containerregistry's `mutate.Append` leaves it for cosign.

Adding a signature rewrites the tag with one more layer (the other layers
are referenced, not re-uploaded). Two signers writing at the same moment
can lose one signature: the registry API has no compare-and-swap on tags,
and cosign has the same race.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from builder.errors import RegistryError
from builder.image import OCI_CONFIG, Descriptor, canonical_json, store_oci_manifest
from builder.registry.client import RegistryClient
from builder.registry.hosts import RegistryHosts
from builder.registry.reference import Reference
from builder.signing.payload import SIMPLE_SIGNING_TYPE
from cache.digest import Digest
from cache.store import ContentStore

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
# A payload is a few hundred bytes; a layer claiming more is not read.
MAX_PAYLOAD_SIZE = 64 << 10
# go-containerregistry's empty time.Time, which cosign's config carries.
_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class StoredSignature:
    """One layer of a .sig image: its descriptor, its payload's bytes
    (None when the layer is not a simple-signing payload one can read) and
    the base64 signature its annotation holds ("" when it has none)."""

    layer: Descriptor
    payload: bytes | None
    signature: str


@dataclass(frozen=True)
class SignatureImage:
    """The `sha256-<hex>.sig` image of one digest: its reference, and its
    layers (none when the tag does not exist yet)."""

    ref: Reference
    layers: tuple[Descriptor, ...]


def origin_client(store: ContentStore, hosts: RegistryHosts) -> RegistryClient:
    """A client for signatures: it reads the registry itself, never a pull
    mirror, which may hold an older .sig image (a signature appended to it
    would drop the ones added since) or hide a revoked one."""
    return RegistryClient(store, hosts=replace(hosts, mirrors={}))


def signature_ref(ref: Reference, digest: Digest) -> Reference:
    """Where cosign keeps the signatures of `digest` in `ref`'s repository."""
    return Reference(ref.registry, ref.repository, tag=f"{digest.algorithm}-{digest.hex}.sig")


def signature_image(client: RegistryClient, ref: Reference, digest: Digest) -> SignatureImage:
    """The .sig image of `digest` as the registry holds it now."""
    sig_ref = signature_ref(ref, digest)
    try:
        resolved = client.resolve(sig_ref)
    except RegistryError as exc:
        if exc.status == 404:
            return SignatureImage(sig_ref, ())
        raise
    return SignatureImage(sig_ref, resolved.layers)


def read_signatures(client: RegistryClient, store: ContentStore, image: SignatureImage) -> list[StoredSignature]:
    """Every layer of `image` with its payload downloaded (verified by
    digest) when it is a simple-signing layer of a sane size."""
    found = []
    for layer in image.layers:
        signature = (layer.annotations or {}).get(SIGNATURE_ANNOTATION, "")
        payload = None
        if layer.media_type == SIMPLE_SIGNING_TYPE and layer.size <= MAX_PAYLOAD_SIZE:
            client.fetch_blob(image.ref, layer)
            payload = store.read_bytes(layer.digest)
        found.append(StoredSignature(layer, payload, signature if isinstance(signature, str) else ""))
    return found


def append_signature(client: RegistryClient, store: ContentStore, image: SignatureImage, payload: bytes,
                     signature: str) -> Digest:
    """Push `image` with one more layer, `payload` signed by `signature`
    (base64); returns the new .sig manifest's digest. The payload blob and
    config go first, the manifest last, as every push does."""
    layer = Descriptor(SIMPLE_SIGNING_TYPE, store.put_bytes(payload), len(payload),
                       annotations={SIGNATURE_ANNOTATION: signature})
    client.push_blob(image.ref, layer)
    layers = (*image.layers, layer)
    config_bytes = canonical_json({
        "architecture": "",
        "config": {},
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [str(each.digest) for each in layers]},
    })
    config = Descriptor(OCI_CONFIG, store.put_bytes(config_bytes), len(config_bytes))
    client.push_blob(image.ref, config)
    return client.put_manifest(image.ref, store_oci_manifest(store, config, layers))
