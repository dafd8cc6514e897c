"""Hostile base images: layer tars written member by member with tarfile
(or GNU tar for sparse files), pushed to the fixture registry with skopeo,
so that pybuild pulls and extracts them exactly as it would a real image."""

from __future__ import annotations

import io
import itertools
import subprocess
import tarfile
from pathlib import Path

from fixtures.busybox import OCI_MANIFEST, busybox_layer_tar, host_arch, skopeo_push, write_image, write_index

_NAMES = itertools.count(1)


def member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644,
           link: str = "", major: int = 0, minor: int = 0, uid: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 0
    info.uid = info.gid = uid
    info.devmajor, info.devminor = major, minor
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def layer(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def sparse_layer(work: Path, name: str, size: int, data: bytes) -> bytes:
    """A layer holding one sparse file of `size` bytes, `data` at its middle."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / name
    with open(path, "wb") as handle:
        handle.truncate(size)
        handle.seek(size // 2)
        handle.write(data)
    try:
        return subprocess.run(["tar", "--sparse", "--format=gnu", "--numeric-owner", "-C", str(work), "-cf", "-",
                               name], check=True, capture_output=True, timeout=30).stdout
    finally:
        path.unlink()


def push_image(registry, layout_dir: Path, layers: list[bytes], *, with_busybox: bool = True) -> str:
    """Push busybox (optional) + `layers` as a new repository; returns the ref."""
    name = f"hostile-{next(_NAMES)}-{layout_dir.name.lower()}"[:60].strip("-_.")
    tars = ([busybox_layer_tar()] if with_busybox else []) + list(layers)
    image = write_image(layout_dir, tars, arch=host_arch())
    write_index(layout_dir, OCI_MANIFEST, image.manifest, image.manifest_size, "latest")
    ref = f"{registry.host}/{name}:latest"
    skopeo_push(layout_dir, "latest", ref)
    return ref
