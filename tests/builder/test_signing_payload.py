"""builder.signing.payload against what cosign 2.x wrote: `cosign sign
--key` of 127.0.0.1:41835/bb@sha256:6035... stored this payload, byte for
byte (test_signing_keys checks cosign's signature of it)."""

from __future__ import annotations

import pytest

from builder.registry.reference import Reference
from builder.signing.payload import Claims, make_payload, read_payload
from cache.digest import Digest

DIGEST = Digest.parse("sha256:6035723755d93e1644e17bd35f914e48dbd0d96b696ca1209cbc59b4dea4d3da")
COSIGN_PAYLOAD = (b'{"critical":{"identity":{"docker-reference":"127.0.0.1:41835/bb"},"image":'
                  b'{"docker-manifest-digest":"sha256:6035723755d93e1644e17bd35f914e48dbd0d96b696ca1209cbc59b4dea4d3da"}'
                  b',"type":"cosign container image signature"},"optional":null}')


def test_payload_bytes_are_cosigns():
    assert make_payload(Reference.parse("127.0.0.1:41835/bb:latest"), DIGEST) == COSIGN_PAYLOAD


def test_docker_hub_is_written_as_go_containerregistry_names_it():
    payload = read_payload(make_payload(Reference.parse("busybox"), DIGEST))
    assert payload == Claims("index.docker.io/library/busybox", DIGEST)
    assert payload.names(Reference.parse("docker.io/library/busybox:1"))
    assert not payload.names(Reference.parse("docker.io/library/alpine:1"))
    assert not Claims("Not A Reference", DIGEST).names(Reference.parse("busybox"))


@pytest.mark.parametrize("data, reason", [
    (b"not json", "not JSON"),
    (b'{"critical":{"type":"other"}}', "is not a 'cosign container image signature'"),
    (b'{"critical":{"type":"cosign container image signature"}}', "names no docker-reference"),
    (b'{"critical":{"type":"cosign container image signature","identity":{"docker-reference":"r/x"},'
     b'"image":{"docker-manifest-digest":"sha256:12"}}}', "digest is invalid"),
    # cosign compares the digest string: one with a trailing newline names nothing.
    (COSIGN_PAYLOAD.replace(DIGEST.hex.encode() + b'"', DIGEST.hex.encode() + b'\\n"'), "digest is invalid"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
])
def test_payloads_that_claim_nothing_usable(data, reason):
    with pytest.raises(ValueError, match=reason):
        read_payload(data)
