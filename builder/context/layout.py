"""An OCI image layout on disk (`index.json`, `blobs/ALG/HEX`) as a source
of blobs for the content store: `--cache-from type=local,src=DIR` and
`--build-context NAME=oci-layout://DIR`."""

from __future__ import annotations

import json
from pathlib import Path

from builder.errors import PybuildError
from builder.image import REF_NAME_ANNOTATION
from builder.image_schema import SchemaError, check_index
from cache.digest import Digest
from cache.errors import DigestMismatch, SizeMismatch


class LayoutError(PybuildError):
    """A layout that is not there, cannot be read, or lacks a blob."""


def tagged_entries(root: Path, tag: str) -> list[dict]:
    """The index entries named `tag` (org.opencontainers.image.ref.name), in index order."""
    try:
        index = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        raise LayoutError(f"{root} is not an OCI layout (no index.json)") from None
    except (OSError, ValueError) as exc:
        raise LayoutError(f"cannot read {root}/index.json: {exc}") from None
    try:
        check_index(index)
    except SchemaError as exc:
        raise LayoutError(f"{root}/index.json is not a valid OCI index: {exc}") from None
    return [m for m in index.get("manifests") or [] if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) == tag]


def copy_blob(root: Path, store, digest: Digest, size: int | None = None) -> None:
    """Put the layout's blob into the store (verified), unless it is there already."""
    if store.has(digest):
        return
    try:
        with open(root / "blobs" / digest.algorithm / digest.hex, "rb") as src:
            store.put_stream(src, digest, size)
    except FileNotFoundError:
        raise LayoutError(f"{root}: blob {digest} is missing") from None
    except (DigestMismatch, SizeMismatch) as exc:
        raise LayoutError(f"{root}: {exc}") from None
