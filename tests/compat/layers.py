"""An image as the harness compares it: its normalized config and history,
and the flattened filesystem change its own layers make over the base
(tests/compat/README.md, "What is compared").

Both builders' images are read from an OCI image layout: pybuild's
`type=oci,tar=false` export, and `docker save`'s archive (docker 26 writes
index.json and blobs/ beside manifest.json)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zstandard

# An mtime at or after this instant (2024-01-01T00:00:00Z) is a build's own
# time (a RUN, a cached step of an earlier run, a directory a COPY created):
# it is recorded as "new". Every fixed time a case uses (the context's,
# archive members', the base's 0) lies before it.
NEW_SINCE = 1_704_067_200

CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
               "StopSignal", "Healthcheck", "Shell", "OnBuild", "ArgsEscaped")

_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
          tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
          tarfile.CONTTYPE: "file"}


@dataclass(frozen=True)
class Base:
    """What the case's base image holds: the harness records only what a
    build adds over it."""

    diff_ids: tuple[str, ...]
    history_length: int


def layout_reader(path: Path) -> Callable[[str], bytes]:
    """A function giving a blob of the OCI layout at `path` (a directory or
    a tar archive of one) by its digest, or a top-level file by name."""
    if path.is_dir():
        def read(name: str) -> bytes:
            return (path / _blob_path(name)).read_bytes()
        return read
    archive = tarfile.open(path)
    members = {member.name.lstrip("./"): member for member in archive.getmembers()}

    def read_member(name: str) -> bytes:
        return archive.extractfile(members[_blob_path(name)]).read()
    return read_member


def _blob_path(name: str) -> str:
    if name.startswith("sha256:"):
        return "blobs/sha256/" + name.split(":", 1)[1]
    return name


def image_record(read: Callable[[str], bytes], base: Base) -> dict:
    """The comparable record of the one image in a layout."""
    index = json.loads(read("index.json"))
    manifest = json.loads(read(index["manifests"][0]["digest"]))
    if "manifests" in manifest:  # a nested index: its image, not an attestation manifest
        images = [entry for entry in manifest["manifests"]
                  if entry.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest"]
        manifest = json.loads(read(images[0]["digest"]))
    config = json.loads(read(manifest["config"]["digest"]))
    diff_ids = tuple(config["rootfs"]["diff_ids"])
    own_from = len(base.diff_ids) if diff_ids[:len(base.diff_ids)] == base.diff_ids else 0
    history_from = base.history_length if own_from else 0
    layers = [_uncompressed(read(layer["digest"])) for layer in manifest["layers"]]
    return {"config": normalized_config(config.get("config") or {}),
            "history": [_history_entry(entry) for entry in config.get("history", [])[history_from:]],
            "files": filesystem_change(layers, own_from)}


def normalized_config(config: dict) -> dict:
    # A key given as null says what an absent one says.
    return {key: config[key] for key in CONFIG_KEYS if config.get(key) is not None}


def _history_entry(entry: dict) -> dict:
    return {"created_by": entry.get("created_by", ""), "empty_layer": bool(entry.get("empty_layer")),
            "comment": entry.get("comment", "")}


def _uncompressed(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _path(name: str) -> str:
    name = name.lstrip(".").strip("/") if name in (".", "./") else name.removeprefix("./").strip("/")
    return "/" + name if name else "/"


def _xattrs(member: tarfile.TarInfo) -> dict:
    found = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            raw = value.encode("utf-8", "surrogateescape")
            try:
                found[key.removeprefix("SCHILY.xattr.")] = raw.decode("utf-8")
            except UnicodeDecodeError:
                found[key.removeprefix("SCHILY.xattr.")] = "hex:" + raw.hex()
    return found


def _entry(member: tarfile.TarInfo, archive: tarfile.TarFile) -> dict:
    kind = _TYPES.get(member.type)
    if kind is None:
        raise ValueError(f"tar member {member.name!r} has type {member.type!r}")
    mtime = int(member.mtime)
    entry = {"type": kind, "mode": f"{member.mode & 0o7777:04o}", "uid": member.uid, "gid": member.gid,
             "mtime": "new" if mtime >= NEW_SINCE else mtime}
    if kind == "file":
        data = archive.extractfile(member).read()
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    elif kind == "symlink":
        entry["target"] = member.linkname
    elif kind in ("char", "block"):
        entry["device"] = f"{member.devmajor},{member.devminor}"
    xattrs = _xattrs(member)
    if xattrs:
        entry["xattrs"] = xattrs
    return entry


def _remove_tree(state: dict, path: str) -> None:
    prefix = path.rstrip("/") + "/"
    for name in [name for name in state if name == path or name.startswith(prefix)]:
        del state[name]


def filesystem_change(layers: list[bytes], own_from: int) -> dict:
    """path -> entry for what the layers from `own_from` on leave different
    from the layers before them (an entry the same as the base's, such as a
    parent directory a layer repeats, is left out), and {"type": "deleted"}
    for each topmost base path they remove."""
    state: dict[str, dict] = {}
    links: dict[str, str] = {}  # hard link -> the member it names
    base: dict[str, dict] = {}
    for number, data in enumerate(layers):
        if number == own_from:
            base = dict(state)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive:
                _apply(state, links, member, archive)
    if own_from == len(layers):
        base = dict(state)
    change = {path: entry for path, entry in state.items() if base.get(path) != entry}
    for path, group in _link_groups(state, links).items():
        if path in change:
            change[path] = {**change[path], "links": group}
    gone = sorted(set(base) - set(state))
    for path in gone:
        if not any(path.startswith(other.rstrip("/") + "/") for other in gone if other != path):
            change[path] = {"type": "deleted"}
    return dict(sorted(change.items()))


def _apply(state: dict, links: dict, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
    path = _path(member.name)
    parent, _, name = path.rpartition("/")
    parent = parent or "/"
    if name == ".wh..wh..opq":
        for child in [child for child in state if child.startswith(parent.rstrip("/") + "/")]:
            del state[child]
        return
    if name.startswith(".wh."):
        _remove_tree(state, parent.rstrip("/") + "/" + name[4:])
        return
    if member.islnk():
        target = _path(member.linkname)
        if target not in state:
            raise ValueError(f"hard link {path!r} names {target!r}, which is not in the layers")
        state[path] = {**state[target], **{k: v for k, v in _link_meta(member).items()}}
        links[path] = target
        return
    if member.isdir() and path in state and state[path]["type"] == "dir":
        state[path] = _entry(member, archive)
        return
    _remove_tree(state, path)
    links.pop(path, None)
    state[path] = _entry(member, archive)


def _link_meta(member: tarfile.TarInfo) -> dict:
    # A hard link shares its target's inode: only the xattrs a writer
    # repeats on the link member are worth keeping apart.
    xattrs = _xattrs(member)
    return {"xattrs": xattrs} if xattrs else {}


def _link_groups(state: dict, links: dict) -> dict[str, str]:
    """path -> the first path (in sorted order) of its hard-link group, for
    every surviving path in a group of two or more."""
    roots: dict[str, str] = {}

    def root(path: str) -> str:
        while path in links and links[path] in state:
            path = links[path]
        return path
    for path in links:
        if path in state:
            roots[path] = root(path)
    groups: dict[str, list[str]] = {}
    for path, top in roots.items():
        groups.setdefault(top, [top]).append(path)
    named = {}
    for members in groups.values():
        first = min(members)
        for path in members:
            named[path] = first
    return named
