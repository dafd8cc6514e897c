"""The OCI image layout exporter (`--output type=oci`), as a tar or a directory.

Layout (image-spec image-layout.md): `oci-layout`, `index.json` and
`blobs/<alg>/<hex>`. Like BuildKit (through containerd's archive
exporter), each name becomes one `index.json` entry whose
`io.containerd.image.name` holds the full name and whose
`org.opencontainers.image.ref.name` holds only the tag — the OCI spec's
meaning of a ref name, and what `skopeo oci:DIR:TAG` and `umoci --image
DIR:TAG` look up.

Outputs appear whole or not at all: everything is written beside the
destination under a temporary name and renamed into place.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Mapping, Sequence, TypeVar

from builder.errors import ExportError, InvalidReference
from builder.export import scratch
from builder.image import OCI_INDEX, REF_NAME_ANNOTATION, Descriptor, Image, canonical_json
from builder.registry.reference import Reference
from cache.digest import Digest
from cache.errors import BlobNotFound
from cache.store import ContentStore
from runtime.fsutil import remove_tree

IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
CREATED_ANNOTATION = "org.opencontainers.image.created"
OCI_LAYOUT_FILE = "oci-layout"
OCI_LAYOUT_BODY = {"imageLayoutVersion": "1.0.0"}
_COPY_CHUNK = 1 << 20
_T = TypeVar("_T")


@dataclass(frozen=True)
class Entry:
    """One file of an archive: its bytes, or a blob of the store."""

    path: str
    data: bytes | None = None
    blob: Digest | None = None


def parse_names(names: Iterable[str]) -> list[Reference]:
    try:
        return [Reference.parse(name) for name in names]
    except InvalidReference as exc:
        raise ExportError(f"invalid image name: {exc}") from exc


def blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def index_json(manifest: Descriptor, refs: Sequence[Reference],
               index_annotations: Mapping[str, str] | None = None, created: str | None = None) -> dict:
    """The layout's index: one entry per name (one bare entry without names),
    with `annotations` (`annotation-index.KEY=V`) on the index itself.

    `created` (RFC 3339) becomes each entry's `org.opencontainers.image.created`
    unless the descriptor already carries one: BuildKit's oci and docker
    exporters stamp the manifest descriptor so (exporter/oci/export.go), with
    SOURCE_DATE_EPOCH or the export time, and a user's
    `annotation-manifest-descriptor.org.opencontainers.image.created` wins.
    """
    entries = []
    for ref in refs or (None,):
        annotations = dict(manifest.annotations or {})
        if created is not None:
            annotations.setdefault(CREATED_ANNOTATION, created)
        if ref is not None:
            annotations[IMAGE_NAME_ANNOTATION] = str(ref)
            if ref.tag:
                annotations[REF_NAME_ANNOTATION] = ref.tag
        entry = Descriptor(manifest.media_type, manifest.digest, manifest.size,
                           annotations=annotations or None, platform=manifest.platform)
        entries.append(entry.to_json())
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    if index_annotations:
        body["annotations"] = dict(index_annotations)
    return body


def image_blobs(store: ContentStore, image: Image) -> list[Digest]:
    """The image's blobs, each once, all present with the expected sizes."""
    seen: dict[Digest, Descriptor] = {}
    for desc in (image.manifest, image.config, *image.layers):
        seen.setdefault(desc.digest, desc)
    for digest, desc in seen.items():
        try:
            size = store.size(digest)
        except BlobNotFound as exc:
            raise ExportError(f"cannot export image {image.manifest.digest}: {exc}") from exc
        if size != desc.size:
            raise ExportError(f"cannot export image {image.manifest.digest}: blob {digest} has "
                              f"{size} bytes in the store, the manifest says {desc.size}")
    return sorted(seen)


def layout_entries(store: ContentStore, image: Image | Sequence[Image], refs: Sequence[Reference],
                   index_annotations: Mapping[str, str] | None = None, created: str | None = None, *,
                   index: Descriptor | None = None) -> list[Entry]:
    """The files of a layout holding `image`; or, with `index`, the image
    index of the images `image` lists (a build for several platforms): then
    index.json's entries name the index, as BuildKit's oci exporter writes
    one, and blobs/ holds the index and every image's blobs."""
    images = [image] if isinstance(image, Image) else list(image)
    blobs = {digest for each in images for digest in image_blobs(store, each)}
    if index is not None:
        if not store.has(index.digest):
            raise ExportError(f"cannot export image index {index.digest}: not in the store")
        blobs.add(index.digest)
    entries = [Entry(blob_path(digest), blob=digest) for digest in sorted(blobs)]
    entries.append(Entry(OCI_LAYOUT_FILE, data=canonical_json(OCI_LAYOUT_BODY)))
    top = index if index is not None else images[0].manifest
    entries.append(Entry("index.json", data=canonical_json(index_json(top, refs, index_annotations, created))))
    return entries


def _tar_info(path: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    # Fixed owner, mode and time: the same image always gives the same tar.
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(store: ContentStore, entries: Sequence[Entry], out: BinaryIO) -> None:
    """Stream entries as a tar (works on pipes: nothing is seeked)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        dirs_done: set[str] = set()
        for entry in entries:
            parent = entry.path.rpartition("/")[0]
            parts = parent.split("/") if parent else []
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in dirs_done:
                    dirs_done.add(directory)
                    tar.addfile(_tar_info(directory + "/", 0, directory=True))
            if entry.blob is not None:
                with store.open(entry.blob) as blob:
                    tar.addfile(_tar_info(entry.path, store.size(entry.blob)), blob)
            else:
                tar.addfile(_tar_info(entry.path, len(entry.data)), io.BytesIO(entry.data))


def write_directory(store: ContentStore, entries: Sequence[Entry], root: Path) -> None:
    for entry in entries:
        target = root / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.blob is not None:
            with store.open(entry.blob) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        else:
            target.write_bytes(entry.data)


def atomic_file(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `dest` through a temp file beside it (builder/export/scratch.py),
    fsynced, then renamed: a symlink at dest is replaced, never followed."""
    if dest.is_dir():
        raise ExportError(f"cannot write {dest}: is a directory")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with scratch.exporting():
        tmp, fd = _make_beside(dest, lambda path: os.open(path, flags, 0o600))
        done = False
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fchmod(out.fileno(), 0o644)
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            done = True
        except OSError as exc:
            raise ExportError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        finally:
            if not done:
                tmp.unlink(missing_ok=True)


def _make_beside(dest: Path, create: Callable[[Path], _T]) -> tuple[Path, _T]:
    """A temporary `create(path)` makes beside `dest`, under a fresh name
    (builder/export/scratch.py), once the dead exports' there are removed;
    the path and what `create` returned."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        scratch.remove_left_over_in(dest.parent)
        name, made = scratch.make(lambda n: create(dest.parent / n), dest.parent)
    except OSError as exc:
        raise ExportError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    return dest.parent / name, made


def atomic_directory(dest: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory beside `dest` and swap it into place.

    An existing destination is replaced only when it is empty or an OCI
    layout itself — never someone's unrelated directory.
    """
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"cannot write {dest}: exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / OCI_LAYOUT_FILE).is_file():
        raise ExportError(f"cannot write {dest}: exists and is not an OCI layout")
    with scratch.exporting():
        tmp, _ = _make_beside(dest, lambda path: os.mkdir(path, 0o700))
        old = None
        done = False
        try:
            tmp.chmod(0o755)
            fill(tmp)
            if dest.exists():
                # the name is ours alone: its random part was fresh for tmp
                old = dest.with_name(tmp.name + scratch.OLD)
                os.rename(dest, old)
            os.rename(tmp, dest)
            done = True
        except OSError as exc:
            raise ExportError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        finally:
            if not done:
                remove_tree(tmp, ignore_errors=True)
                if old is not None and not dest.exists():
                    os.rename(old, dest)
            elif old is not None:
                remove_tree(old, ignore_errors=True)


def stream_oci_archive(store: ContentStore, image: Image | Sequence[Image], out: BinaryIO, *,
                       ref_names: Sequence[str] = (), index_annotations: Mapping[str, str] | None = None,
                       created: str | None = None, index: Descriptor | None = None) -> None:
    """The OCI layout as a tar on an open stream (e.g. stdout)."""
    write_tar(store, layout_entries(store, image, parse_names(ref_names), index_annotations, created,
                                    index=index), out)


def write_oci_layout(store: ContentStore, image: Image | Sequence[Image], dest: Path, *, tar: bool = True,
                     ref_names: Sequence[str] = (), index_annotations: Mapping[str, str] | None = None,
                     created: str | None = None, index: Descriptor | None = None) -> None:
    """Export `image` (or the images of `index`, layout_entries) as an OCI
    image layout: a tar file (`tar=True`) or a directory."""
    dest = Path(dest)
    entries = layout_entries(store, image, parse_names(ref_names), index_annotations, created, index=index)
    if tar:
        atomic_file(dest, lambda out: write_tar(store, entries, out))
    else:
        atomic_directory(dest, lambda root: write_directory(store, entries, root))
