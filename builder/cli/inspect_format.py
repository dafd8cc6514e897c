"""`pybuild inspect --format`: the part of `docker buildx imagetools inspect
--format` that scripts use, a Go template printing one value as JSON:

    {{json .Name}}        the name as given
    {{json .Manifest}}    an image's descriptor {mediaType, digest, size}; an
                          index's {schemaVersion, mediaType, digest, size,
                          manifests[, annotations]}
    {{json .Image}}       the image config
    {{json .Provenance}}  {"SLSA": <the SLSA provenance predicate>}
    {{json .SBOM}}        {"SPDX": <the first SPDX document>[,
                          "AdditionalSPDXs": [<the others>]]}

For an index of more than one platform, Image, Provenance and SBOM map each
platform (`linux/arm64`, containerd's normal form) to that value, and a
platform without provenance or SBOM is left out of the map; of one image,
a missing one is `{}`. This is how buildx 0.13's loader shapes them
(util/imagetools/loader.go, printers.go). A field path below the value
(`.Provenance.SLSA`, `.SBOM.SPDX`, a missing key giving null as Go's
zero value) and `(index .SBOM "linux/arm64")` are understood as Go's
template would, the latter also for an image of one platform (where buildx
has no map to index); nothing else of Go's templates is. The JSON is
written as buildx writes it (builder/cli/gojson.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import click

from builder.cli import gojson

FIELDS = ("Name", "Manifest", "Image", "Provenance", "SBOM")
SLSA_PREFIX = "https://slsa.dev/provenance/"
SPDX_DOCUMENT = "https://spdx.dev/Document"

_TEMPLATE = re.compile(r'\{\{-?\s*json\s+(?:\(\s*index\s+\.(\w+)\s+"([^"\\]*)"\s*\)|\.(\w+))((?:\.\w+)*)\s*-?\}\}')
SUPPORTED = ('{{json .Manifest}}, {{json .Image}}, {{json .Provenance}}, {{json .SBOM}}, {{json .Name}}, '
             'a field below them (.Provenance.SLSA, .SBOM.SPDX) and (index .SBOM "linux/arm64")')


@dataclass(frozen=True)
class Template:
    """What a supported template prints: one field, one platform's value
    of it (index), then the keys below."""

    field: str
    platform: str | None
    path: tuple[str, ...]


def parse_template(text: str) -> Template:
    match = _TEMPLATE.fullmatch(text.strip())
    field = match and (match.group(1) or match.group(3))
    if field not in FIELDS:
        raise click.BadParameter(f"{text!r} is not supported: pybuild supports {SUPPORTED}",
                                 param_hint="--format")
    return Template(field, match.group(2), tuple(filter(None, match.group(4).split("."))))


def platform_key(entry_platform: dict | None, config: dict) -> str:
    """containerd's Format(Normalize(p)) of an index entry's platform, or
    the config's when the entry has none."""
    from frontend.platforms import parse_platform

    source = entry_platform or config
    parts = [source.get("os") or "linux", source.get("architecture") or "", source.get("variant") or ""]
    try:
        return str(parse_platform("/".join(filter(None, parts))))
    except ValueError:  # not a platform pybuild knows: shown as written
        return "/".join(filter(None, parts))


def _predicates(store, attestation, wanted) -> list:
    from builder.attest.manifests import read_statements

    found = []
    for statement in read_statements(store, attestation) if attestation is not None else ():
        if wanted(statement.predicate_type):
            found.append(json.loads(statement.body).get("predicate"))
    return found


def _provenance(store, attestation) -> dict:
    found = _predicates(store, attestation, lambda kind: kind.startswith(SLSA_PREFIX))
    return {"SLSA": gojson.as_map(found[0])} if found else {}


def _sbom(store, attestation) -> dict:
    found = _predicates(store, attestation, lambda kind: kind == SPDX_DOCUMENT)
    if not found:
        return {}
    extra = {"AdditionalSPDXs": gojson.as_map(found[1:])} if found[1:] else {}
    return {"SPDX": gojson.as_map(found[0]), **extra}


def platform_values(worker, name: str, field: str) -> dict:
    """Image, Provenance or SBOM of each platform of the stored image
    `name` (one for an image, each image's for an index)."""
    from builder.attest.manifests import attestations_by_subject, is_attestation
    from builder.root.images import find, find_index
    from cache.digest import Digest

    store = worker.store
    index = find_index(worker, name)
    if index is None:
        stored = find(worker, name)
        return {platform_key(None, stored.config): gojson.image(stored.config) if field == "Image" else {}}
    attestations = attestations_by_subject(index.body)
    values = {}
    for entry in index.image_entries():
        if is_attestation(entry):
            continue
        manifest = store.read_json(Digest.parse(entry["digest"]))
        config = store.read_json(Digest.parse(manifest["config"]["digest"]))
        descriptor = attestations.get(entry["digest"])
        value = (gojson.image(config) if field == "Image" else
                 _provenance(store, descriptor) if field == "Provenance" else _sbom(store, descriptor))
        values[platform_key(entry.get("platform"), config)] = value
    return values


def field_value(worker, name: str, field: str):
    """The value `{{json .<field>}}` prints for the stored image `name`."""
    from builder.root.images import find, find_index

    if field == "Name":
        return name
    if field == "Manifest":
        index = find_index(worker, name)
        if index is None:
            return gojson.descriptor(find(worker, name).image.manifest.to_json())
        body = index.body
        manifest = {"schemaVersion": body.get("schemaVersion", 2), "mediaType": index.descriptor.media_type,
                    "digest": str(index.descriptor.digest), "size": index.descriptor.size,
                    "manifests": body.get("manifests") or []}
        return gojson.index(manifest | ({"annotations": body["annotations"]} if body.get("annotations") else {}))
    values = platform_values(worker, name, field)
    if len(values) <= 1:
        return next(iter(values.values()), None if field == "Image" else {})
    return {platform: values[platform] for platform in sorted(values) if values[platform]}


def render(worker, name: str, template: Template) -> str:
    """The template's output for the stored image `name`."""
    from builder.errors import PybuildError

    if template.platform is None:
        value = field_value(worker, name, template.field)
    elif template.field in ("Name", "Manifest"):
        raise PybuildError(f"--format: .{template.field} has no platforms to index")
    else:
        # Also for an image of one platform, where buildx's value is not a map.
        values = platform_values(worker, name, template.field)
        if template.platform not in values:
            raise PybuildError(f"{name} has no image for platform {template.platform}; "
                               f"it has {', '.join(sorted(values))}")
        value = values[template.platform]
    for key in template.path:
        # As Go's template: a missing key of a map is its zero value.
        value = value.get(key) if isinstance(value, dict) else None
    return gojson.dumps(value)
