"""Which entry of an image index serves a platform (builder/registry/
platforms.select_platform): containerd's platforms.Only, as BuildKit 0.13
(docker 26) chose when building FROM indexes of these shapes with
`--platform` (each expected entry below was measured so), and the error
naming the platforms an index has when none serves."""

from __future__ import annotations

import pytest

from builder.image import OCI_INDEX, OCI_MANIFEST
from builder.registry.platforms import no_match, select_platform
from cache.digest import Digest
from frontend.ops import Platform


def entry(platform: str) -> dict:
    os_name, arch, *variant = platform.split("/")
    body = {"os": os_name, "architecture": arch}
    if variant:
        body["variant"] = variant[0]
    return {"mediaType": OCI_MANIFEST, "digest": str(Digest.of_bytes(platform.encode())), "size": 1,
            "platform": body}


def chosen(index: list[str], asked) -> str | None:
    found = select_platform([entry(p) for p in index], asked)
    if found is None:
        return None
    return next(p for p in index if str(Digest.of_bytes(p.encode())) == str(found.digest))


@pytest.mark.parametrize("index, asked, expected", [
    # arm: the asked variant, then older ones, best first whatever the index order
    (["linux/arm/v5", "linux/arm/v6"], "linux/arm/v7", "linux/arm/v6"),
    (["linux/arm/v6", "linux/arm/v5"], "linux/arm/v7", "linux/arm/v6"),
    (["linux/arm/v5", "linux/arm/v6", "linux/arm/v7"], "linux/arm/v7", "linux/arm/v7"),
    (["linux/arm/v5", "linux/arm/v6"], "linux/arm/v6", "linux/arm/v6"),
    (["linux/arm/v5"], "linux/arm/v6", "linux/arm/v5"),
    (["linux/arm/v7"], "linux/arm/v6", None),
    (["linux/arm/v6", "linux/arm/v7"], "linux/arm", "linux/arm/v7"),  # linux/arm is arm/v7
    (["linux/arm"], "linux/arm/v7", "linux/arm"),  # an entry without variant is v7
    (["linux/arm/v5", "linux/arm/v6"], Platform("linux", "arm", "v7"), "linux/arm/v6"),
    # arm64 is arm64/v8, both ways, and runs arm after every arm64 entry
    (["linux/amd64", "linux/arm64"], "linux/arm64/v8", "linux/arm64"),
    (["linux/arm64/v8"], "linux/arm64", "linux/arm64/v8"),
    (["linux/arm/v7", "linux/arm64"], "linux/arm64", "linux/arm64"),
    (["linux/arm/v7"], "linux/arm64", "linux/arm/v7"),
    (["linux/arm64"], "linux/arm/v7", None),
    # amd64: v1 only unless a newer level is asked; then that level down to v1; 386 last
    (["linux/amd64/v2"], "linux/amd64", None),
    (["linux/amd64", "linux/amd64/v3"], "linux/amd64", "linux/amd64"),
    (["linux/amd64/v3", "linux/amd64"], "linux/amd64", "linux/amd64"),
    (["linux/amd64", "linux/amd64/v3"], "linux/amd64/v3", "linux/amd64/v3"),
    (["linux/amd64", "linux/amd64/v3"], "linux/amd64/v2", "linux/amd64"),
    (["linux/amd64/v2", "linux/amd64", "linux/amd64/v3"], "linux/amd64/v3", "linux/amd64/v3"),
    (["linux/amd64/v1"], "linux/amd64", "linux/amd64/v1"),
    (["linux/386"], "linux/amd64", "linux/386"),
    (["linux/386", "linux/amd64"], "linux/amd64", "linux/amd64"),
    (["linux/amd64"], "linux/386", None),
    # os and aliases
    (["windows/amd64", "linux/amd64"], "linux/amd64", "linux/amd64"),
    (["linux/amd64"], "linux/x86_64", "linux/amd64"),
    (["linux/arm/v6"], "linux/armel", "linux/arm/v6"),
])
def test_containerd_rules(index, asked, expected):
    assert chosen(index, asked) == expected


def test_entries_that_are_no_image_never_serve():
    attestation = dict(entry("unknown/unknown"), annotations={"vnd.docker.reference.type": "attestation-manifest"})
    nested = dict(entry("linux/amd64"), mediaType=OCI_INDEX)
    bare = {"mediaType": OCI_MANIFEST, "digest": str(Digest.of_bytes(b"x")), "size": 1}
    assert select_platform([attestation, nested, bare], "linux/amd64") is None
    assert no_match([attestation, nested, bare], "linux/amd64") == (
        "no match for platform linux/amd64 in manifest list; it has no platform images")


def test_no_match_names_the_platforms_the_index_has():
    index = [entry(p) for p in ("linux/amd64", "linux/arm64/v8", "linux/arm64", "linux/arm/v6")]
    assert select_platform(index, "linux/s390x") is None
    assert no_match(index, "linux/s390x") == (
        "no match for platform linux/s390x in manifest list; it has linux/amd64, linux/arm64, linux/arm/v6")
    assert select_platform(index, "linux/arm/v5") is None
    assert no_match(index, "linux/arm/v5") == (
        "no match for platform linux/arm/v5 in manifest list; it has linux/amd64, linux/arm64, linux/arm/v6")
    # what is asked for is named as it is matched: linux/arm is arm/v7
    assert no_match([entry("linux/amd64")], "linux/arm") == (
        "no match for platform linux/arm/v7 in manifest list; it has linux/amd64")
