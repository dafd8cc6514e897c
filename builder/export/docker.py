"""The `docker load` archive exporter (`--output type=docker`).

The archive is what `docker save` has written since docker 25 and what
BuildKit's docker exporter writes: an OCI image layout (`oci-layout`,
`index.json`, `blobs/sha256/...`) plus docker's own `manifest.json`
(`[{"Config", "RepoTags", "Layers"}]`, paths pointing into `blobs/`) and
the legacy `repositories` file. Older `docker load` reads `manifest.json`
and follows its paths, newer ones read `index.json`; both accept gzip or
uncompressed layers, so layers are written as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

from builder.export.oci import Entry, atomic_file, blob_path, layout_entries, parse_names, write_tar
from builder.image import Image, canonical_json
from builder.registry.reference import Reference
from cache.store import ContentStore


def docker_manifest(image: Image, refs: Sequence[Reference]) -> list[dict]:
    """`manifest.json`: one image, its familiar tags (`busybox:latest`,
    `localhost:5000/app:1`); names given only by digest carry no tag."""
    return [{
        "Config": blob_path(image.config.digest),
        "RepoTags": [ref.with_digest(None).familiar for ref in refs if ref.tag],
        "Layers": [blob_path(layer.digest) for layer in image.layers],
    }]


def repositories(image: Image, refs: Sequence[Reference]) -> dict:
    """The pre-1.10 `repositories` file: repository → tag → image id.

    Docker reads it only from archives without `manifest.json`; it is
    written because `docker save` writes it, with the image id docker will
    give the image (the config digest's hex).
    """
    body: dict[str, dict[str, str]] = {}
    for ref in refs:
        if ref.tag:
            repo = ref.with_tag(None).with_digest(None).familiar
            body.setdefault(repo, {})[ref.tag] = image.config.digest.hex
    return body


def docker_entries(store: ContentStore, image: Image, refs: Sequence[Reference],
                   index_annotations: Mapping[str, str] | None = None, created: str | None = None) -> list[Entry]:
    entries = layout_entries(store, image, refs, index_annotations, created)
    entries.append(Entry("manifest.json", data=canonical_json(docker_manifest(image, refs))))
    entries.append(Entry("repositories", data=canonical_json(repositories(image, refs))))
    return entries


def stream_docker_archive(store: ContentStore, image: Image, out: BinaryIO, *,
                          tags: Sequence[str] = (), index_annotations: Mapping[str, str] | None = None,
                          created: str | None = None) -> None:
    """The archive on an open stream (e.g. stdout for `docker load`)."""
    write_tar(store, docker_entries(store, image, parse_names(tags), index_annotations, created), out)


def write_docker_archive(store: ContentStore, image: Image, dest: Path, *,
                         tags: Sequence[str] = (), index_annotations: Mapping[str, str] | None = None,
                         created: str | None = None) -> None:
    """Write the archive to `dest` atomically."""
    entries = docker_entries(store, image, parse_names(tags), index_annotations, created)
    atomic_file(Path(dest), lambda out: write_tar(store, entries, out))
