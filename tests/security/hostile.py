"""Hostile base images: layer tars written member by member with tarfile
(or GNU tar for sparse files), pushed to the fixture registry with skopeo,
so that pybuild pulls and extracts them exactly as it would a real image."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urljoin

import requests

from fixtures.busybox import (OCI_CONFIG, OCI_MANIFEST, busybox_layer_tar, host_arch, skopeo_push, write_image,
                              write_index)

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


def push_image(registry, layout_dir: Path, layers: list[bytes], *, with_busybox: bool = True,
               diff_ids: list[str] | None = None) -> str:
    """Push busybox (optional) + `layers` as a new repository, its config
    claiming `diff_ids` if given (else the true ones); returns the ref."""
    name = f"hostile-{next(_NAMES)}-{layout_dir.name.lower()}"[:60].strip("-_.")
    tars = ([busybox_layer_tar()] if with_busybox else []) + list(layers)
    image = write_image(layout_dir, tars, arch=host_arch(), diff_ids=diff_ids)
    write_index(layout_dir, OCI_MANIFEST, image.manifest, image.manifest_size, "latest")
    ref = f"{registry.host}/{name}:latest"
    skopeo_push(layout_dir, "latest", ref)
    return ref


def push_blob(registry_url: str, repository: str, pieces: Callable[[], Iterable[bytes]]) -> dict:
    """Upload the blob `pieces()` yields straight through the distribution
    API, as it is (skopeo reads a config whole, and refuses one over 4 MiB),
    never holding it whole: it is hashed in a first pass, then streamed.
    Returns its descriptor's digest and size."""
    digest, size = hashlib.sha256(), 0
    for piece in pieces():
        digest.update(piece)
        size += len(piece)
    started = requests.post(f"{registry_url}/v2/{repository}/blobs/uploads/", timeout=30)
    assert started.status_code == 202, started.text
    location = urljoin(registry_url, started.headers["Location"])
    done = requests.put(f"{location}{'&' if '?' in location else '?'}digest=sha256:{digest.hexdigest()}",
                        data=iter(pieces()), headers={"Content-Type": "application/octet-stream"}, timeout=300)
    assert done.status_code == 201, done.text
    return {"digest": f"sha256:{digest.hexdigest()}", "size": size}


def push_manifest(registry_url: str, repository: str, config: dict, layers: list[dict] = (),
                  tag: str = "latest") -> str:
    """Push a manifest of the config descriptor `config` and these layer
    descriptors (blobs pushed already), as it is; returns the ref."""
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG, **config},
                "layers": list(layers)}
    done = requests.put(f"{registry_url}/v2/{repository}/manifests/{tag}", data=json.dumps(manifest),
                        headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert done.status_code == 201, done.text
    return f"{registry_url.split('://', 1)[1]}/{repository}:{tag}"
