"""JSON as buildx's template function `json` writes it: Go's
`json.MarshalIndent(v, "", "  ")` of image-spec structs.

Go writes a struct's fields in their declaration order and a map's keys
sorted, escapes <, > and & (and U+2028, U+2029) in strings, and ends
without a newline. The structs buildx prints are image-spec v1.1's
Descriptor, Platform, Image (with ImageConfig, RootFS, History) and the
index buildx makes of an Index; everything else (annotations, labels, the
in-toto predicates, which buildx decodes into `any`) is a map. Fields a
struct does not declare (docker's Healthcheck or Shell in a config) are
kept, after the declared ones and sorted: buildx drops them, pybuild does
not hide what the image holds.
"""

from __future__ import annotations

import json

PLATFORM = ("architecture", "os", "os.version", "os.features", "variant")
DESCRIPTOR = ("mediaType", "digest", "size", "urls", "annotations", "data", "platform", "artifactType")
INDEX = ("schemaVersion", "mediaType", "digest", "size", "manifests", "annotations")
IMAGE = ("created", "author", *PLATFORM, "config", "rootfs", "history")
IMAGE_CONFIG = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                "StopSignal", "ArgsEscaped")
ROOTFS = ("type", "diff_ids")
HISTORY = ("created", "created_by", "author", "comment", "empty_layer")
_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def as_map(value):
    """A Go map (of `any`): every key sorted, all the way down."""
    if isinstance(value, dict):
        return {key: as_map(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [as_map(item) for item in value]
    return value


def as_struct(value, fields: tuple[str, ...], **nested):
    """A Go struct of `fields` in that order, then keys it does not declare
    (sorted); `nested` orders a field's own value (a function of it)."""
    if not isinstance(value, dict):
        return as_map(value)
    ordered = {key: value[key] for key in fields if key in value}
    ordered.update((key, value[key]) for key in sorted(value) if key not in ordered)
    return {key: nested[key](item) if key in nested else as_map(item) for key, item in ordered.items()}


def descriptor(value):
    return as_struct(value, DESCRIPTOR, platform=lambda platform: as_struct(platform, PLATFORM))


def index(value):
    return as_struct(value, INDEX, manifests=lambda entries: [descriptor(entry) for entry in entries or []])


def image(value):
    return as_struct(value, IMAGE, config=lambda config: as_struct(config, IMAGE_CONFIG),
                     rootfs=lambda rootfs: as_struct(rootfs, ROOTFS),
                     history=lambda rows: [as_struct(row, HISTORY) for row in rows or []])


def dumps(value) -> str:
    """`value`, ordered already (the functions above), as Go indents it.
    <, > and & only occur inside JSON strings, so replacing them is safe."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    for char, escape in _ESCAPES:
        text = text.replace(char, escape)
    return text
