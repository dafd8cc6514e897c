"""Reading what a rootless build wrote, as root, without pybuild's code:
OCI archives and layouts, docker archives, layer tars."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True)
class Archive:
    """An image in an OCI archive (`-o type=oci,dest=X`) or layout
    (`tar=false`): the first manifest of its index."""

    path: Path

    def blob(self, digest: str) -> bytes:
        name = "blobs/" + digest.replace(":", "/", 1)
        if self.path.is_dir():
            return (self.path / name).read_bytes()
        with tarfile.open(self.path) as tar:
            return tar.extractfile(name).read()

    @property
    def index(self) -> dict:
        if self.path.is_dir():
            return json.loads((self.path / "index.json").read_text())
        with tarfile.open(self.path) as tar:
            return json.loads(tar.extractfile("index.json").read())

    @property
    def top_digest(self) -> str:
        """What the layout names: the image's manifest, or the index of the
        image and its attestations (a build's containerimage.digest)."""
        return self.index["manifests"][0]["digest"]

    @property
    def manifest_digest(self) -> str:
        """The image's manifest, through the image index the layout names
        when the image carries attestations (its images come first)."""
        entry = self.index["manifests"][0]
        if entry["mediaType"] in _INDEX_TYPES:
            entry = json.loads(self.blob(entry["digest"]))["manifests"][0]
        return entry["digest"]

    @property
    def manifest(self) -> dict:
        return json.loads(self.blob(self.manifest_digest))

    @property
    def config(self) -> dict:
        return json.loads(self.blob(self.manifest["config"]["digest"]))

    def layer(self, index: int = -1) -> list[tarfile.TarInfo]:
        """The entries of one layer, in the order of the tar."""
        data = self.blob(self.manifest["layers"][index]["digest"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            return tar.getmembers()

    def layer_entry(self, path: str, index: int = -1) -> tarfile.TarInfo:
        """One entry of a layer, by its path without a leading slash."""
        entries = {member.name.rstrip("/"): member for member in self.layer(index)}
        assert path in entries, f"{path} not in layer {index}: {sorted(entries)}"
        return entries[path]


def docker_archive(path: Path) -> tuple[dict, dict, list[list[tarfile.TarInfo]]]:
    """`docker save` format: (manifest.json's entry, the config, each
    layer's entries), read as `docker load` would."""
    with tarfile.open(path) as tar:
        [entry] = json.loads(tar.extractfile("manifest.json").read())
        config = json.loads(tar.extractfile(entry["Config"]).read())
        layers = []
        for name in entry["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(tar.extractfile(name).read()), mode="r:*") as layer:
                layers.append(layer.getmembers())
    return entry, config, layers


def tar_names(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        return {member.name.removeprefix("./").rstrip("/") for member in tar.getmembers()}
