"""Image references as package URLs (`pkg:docker/...`), the form BuildKit
gives attestation subjects and provenance materials (util/purl.RefToPURL):

    127.0.0.1:5000/busybox:latest, linux/amd64
      -> pkg:docker/127.0.0.1%3A5000/busybox@latest?platform=linux%2Famd64
    docker.io/library/alpine:3.17 -> pkg:docker/alpine@3.17
    busybox@sha256:ab.. -> pkg:docker/busybox?digest=sha256%3Aab..
    busybox:1@sha256:ab.. -> pkg:docker/busybox@1?digest=sha256%3Aab..
"""

from __future__ import annotations

import urllib.parse

from builder.registry.reference import DEFAULT_REGISTRY, Reference

# packageurl-go escapes every byte but the URL-unreserved ones in a
# namespace segment, the name, the version and a qualifier value.
_SAFE = "-._~"


def image_purl(ref: str | Reference, platform: str = "") -> str:
    parsed = ref if isinstance(ref, Reference) else Reference.parse(ref)
    # docker's familiar name: Docker Hub's registry and library/ are implied.
    name = parsed.repository.removeprefix("library/") if parsed.registry == DEFAULT_REGISTRY else parsed.name
    *namespace, short = name.split("/")
    path = "/".join(quote_part(part) for part in (*namespace, short))
    qualifiers = []
    # A tag is the version (Reference.parse gave `latest` to a name with
    # neither tag nor digest, as distribution's TagNameOnly does); a digest
    # is a qualifier, beside the tag when both were written.
    version = parsed.tag or ""
    if parsed.digest is not None:
        qualifiers.append(("digest", str(parsed.digest)))
    if platform:
        qualifiers.append(("platform", platform))
    return package_url("docker", path, version, qualifiers)


def package_url(kind: str, path: str, version: str = "", qualifiers=()) -> str:
    """`pkg:KIND/PATH[@VERSION][?QUALIFIERS]`, qualifiers sorted by key;
    `path` is already quoted (quote_part), its "/" separating segments."""
    text = f"pkg:{kind}/{path}"
    if version:
        text += "@" + quote_part(version)
    if qualifiers:
        text += "?" + "&".join(f"{key}={quote_part(value)}" for key, value in sorted(qualifiers))
    return text


def quote_part(text: str) -> str:
    """One purl segment, version or qualifier value, escaped."""
    return urllib.parse.quote(text, safe=_SAFE)
