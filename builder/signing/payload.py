"""The simple-signing payload cosign signs: what image (by manifest digest)
under what name (the repository) the signer vouches for.

    {"critical": {"identity": {"docker-reference": "registry/repo"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "cosign container image signature"},
     "optional": null}

cosign writes it as compact JSON with sorted keys, which is
builder.image.canonical_json: the bytes pybuild signs are the bytes cosign
would have signed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from builder.errors import InvalidReference
from builder.image import canonical_json
from builder.registry.reference import DEFAULT_REGISTRY, Reference
from cache.digest import Digest
from cache.errors import InvalidDigest

SIMPLE_SIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_TYPE = "cosign container image signature"
# go-containerregistry names Docker Hub by its API host.
_HUB_NAME = "index.docker.io"


@dataclass(frozen=True)
class Claims:
    """What a payload claims: the repository and the manifest digest."""

    docker_reference: str
    manifest_digest: Digest

    def names(self, ref: Reference) -> bool:
        """Whether the claimed name is `ref`'s repository (Docker Hub's two
        spellings, `docker.io` and `index.docker.io`, taken as one)."""
        try:
            claimed = Reference.parse(self.docker_reference)
        except InvalidReference:
            return False
        return claimed.name == ref.name


def docker_reference(ref: Reference) -> str:
    """The repository as cosign writes it (go-containerregistry's
    `Repository.Name()`): without tag or digest, Docker Hub as index.docker.io."""
    registry = _HUB_NAME if ref.registry == DEFAULT_REGISTRY else ref.registry
    return f"{registry}/{ref.repository}"


def make_payload(ref: Reference, digest: Digest) -> bytes:
    return canonical_json({
        "critical": {
            "identity": {"docker-reference": docker_reference(ref)},
            "image": {"docker-manifest-digest": str(digest)},
            "type": SIGNATURE_TYPE,
        },
        "optional": None,
    })


def read_payload(data: bytes) -> Claims:
    """The claims of a payload; ValueError (with the reason) when it is
    not a cosign image signature's."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
        raise ValueError("the payload is not JSON") from None
    critical = body.get("critical") if isinstance(body, dict) else None
    if not isinstance(critical, dict) or critical.get("type") != SIGNATURE_TYPE:
        raise ValueError(f"the payload is not a {SIGNATURE_TYPE!r}")
    identity, image = critical.get("identity"), critical.get("image")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(reference, str) or not isinstance(digest, str):
        raise ValueError("the payload names no docker-reference or docker-manifest-digest")
    try:
        return Claims(reference, Digest.parse(digest))
    except InvalidDigest as exc:
        raise ValueError(f"the payload's docker-manifest-digest is invalid: {exc}") from None
