"""`--squash`: a stage's new layers merged into one layer.

The merge works on the layer tars themselves, bottom to top, with the
rules an extractor applies (image-spec layer.md, "Applying changesets"):

- `DIR/.wh..wh..opq` hides what lower layers put in DIR: the entries of
  the layers merged so far under DIR go, and the marker is kept, since the
  base image's DIR must stay hidden too.
- `DIR/.wh.NAME` deletes NAME (and everything under it): the entries
  merged so far go, and the whiteout is kept for the base image's NAME.
- Any other entry replaces what was at its path (a non-directory also
  replaces a directory's contents) and cancels a whiteout of that path.

For example, `RUN echo 1 > /a` then `RUN rm /a` squash to a single
`.wh.a` (the base image might have had /a), and `RUN rm -rf /d && mkdir
/d && touch /d/x` over a layer that filled /d squashes to `d/`,
`d/.wh..wh..opq`, `d/x`.

Hard links keep pointing at their target when the target survives from
the same layer; otherwise the link becomes a copy of the data it had.
"""

from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass
from typing import Sequence

from builder.export.compression import Compression, compressing_writer
from cache.digest import Digest
from cache.index import LayerRecord
from runtime.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX

_CHUNK = 1 << 20


@dataclass(frozen=True)
class SquashedLayer:
    diff_id: Digest
    digest: Digest
    size: int
    media_type: str


class _HashingSink:
    def __init__(self, downstream):
        self._downstream = downstream
        self._hash = Digest.of_bytes(b"").hasher()

    def write(self, data) -> int:
        self._hash.update(data)
        self._downstream.write(data)
        return len(data)

    @property
    def diff_id(self) -> Digest:
        return Digest("sha256", self._hash.hexdigest())


def _norm(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _under(path: str, top: str) -> bool:
    return top == "" or path.startswith(top + "/")


def _sort_key(path: str) -> tuple[str, ...]:
    # Parents before children; an opaque marker first among its siblings,
    # right after its directory, as runtime.layer writes it.
    return tuple("\0" if part == OPAQUE_MARKER else part for part in path.split("/"))


class _Merge:
    def __init__(self):
        self.entries: dict[str, tuple[int, tarfile.TarInfo]] = {}
        self.whiteouts: set[str] = set()
        self.opaque: set[str] = set()

    def _drop_under(self, top: str, *, including: bool) -> None:
        for table in (self.entries, ):
            for path in [p for p in table if _under(p, top) or (including and p == top)]:
                del table[path]
        self.whiteouts = {p for p in self.whiteouts if not (_under(p, top) or (including and p == top))}
        if including:
            self.opaque = {p for p in self.opaque if not (_under(p, top) or p == top)}

    def apply(self, layer: int, member: tarfile.TarInfo) -> None:
        path = _norm(member.name)
        if not path:
            return  # the root directory itself: the base image's stays
        parent, base = posixpath.split(path)
        if base == OPAQUE_MARKER:
            self._drop_under(parent, including=False)
            self.opaque.add(parent)
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = posixpath.join(parent, base[len(WHITEOUT_PREFIX):])
            self._drop_under(target, including=True)
            self.whiteouts.add(target)
            return
        existing = self.entries.get(path)
        if not member.isdir() or (existing is not None and not existing[1].isdir()):
            self._drop_under(path, including=not member.isdir())
        self.whiteouts.discard(path)
        self.entries[path] = (layer, member)


def squash_layers(store, records: Sequence[LayerRecord], compression: Compression, *,
                  level: int | None = None, clamp_mtime: int | None = None, tmp=None) -> SquashedLayer | None:
    """Merge the uncompressed layer blobs `records` (bottom to top) into one
    layer blob in `compression`; None when the merge holds nothing."""
    files = [store.open(r.digest) for r in records if not r.empty]
    try:
        tars = [tarfile.open(fileobj=f, mode="r:", errors="surrogateescape") for f in files]
        merge = _Merge()
        by_layer: list[dict[str, tarfile.TarInfo]] = []
        for layer, tar in enumerate(tars):
            members = {}
            for member in tar.getmembers():
                merge.apply(layer, member)
                members[_norm(member.name)] = member
            by_layer.append(members)
        items: list[tuple[tuple[str, ...], str, str]] = []
        items += [(_sort_key(p), "entry", p) for p in merge.entries]
        items += [(_sort_key(posixpath.join(posixpath.dirname(p), WHITEOUT_PREFIX + posixpath.basename(p))),
                   "whiteout", p) for p in merge.whiteouts]
        items += [(_sort_key(posixpath.join(p, OPAQUE_MARKER)), "opaque", p) for p in merge.opaque]
        if not items:
            return None
        items.sort()
        with store.writer() as blob:
            compressor = compressing_writer(blob, compression, level)
            sink = _HashingSink(compressor)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,
                              errors="surrogateescape") as out:
                written: dict[str, tuple[int, tarfile.TarInfo]] = {}
                for _, kind, path in items:
                    if kind == "whiteout":
                        name = posixpath.join(posixpath.dirname(path), WHITEOUT_PREFIX + posixpath.basename(path))
                        out.addfile(_marker(name))
                    elif kind == "opaque":
                        out.addfile(_marker(posixpath.join(path, OPAQUE_MARKER)))
                    else:
                        layer, member = merge.entries[path]
                        _write_entry(out, tars, by_layer, written, layer, member, path, clamp_mtime)
            compressor.close()
            digest = blob.commit()
            size = blob.size
        return SquashedLayer(sink.diff_id, digest, size, compression.media_type())
    finally:
        for f in files:
            f.close()


def _marker(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, 0, "", ""
    return info


def _write_entry(out, tars, by_layer, written, layer, member, path, clamp_mtime) -> None:
    info = _copy(member, path, clamp_mtime)
    if member.islnk():
        target = _norm(member.linkname)
        if written.get(target) == (layer, by_layer[layer].get(target)):
            info.linkname = target
            out.addfile(info)
            written[path] = (layer, member)
            return
        # The target is gone or replaced: carry the data it had instead.
        source = by_layer[layer].get(target)
        if source is None or not source.isreg():
            info.type, info.linkname = tarfile.SYMTYPE, "/" + target  # cannot happen for our own layers
            out.addfile(info)
            return
        info.type, info.linkname, info.size = tarfile.REGTYPE, "", source.size
        out.addfile(info, tars[layer].extractfile(source))
        written[path] = (layer, member)
        return
    if member.isreg():
        out.addfile(info, tars[layer].extractfile(member))
    else:
        out.addfile(info)
    written[path] = (layer, member)


def _copy(member: tarfile.TarInfo, path: str, clamp_mtime: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    for field in ("size", "mode", "uid", "gid", "mtime", "type", "linkname", "uname", "gname",
                  "devmajor", "devminor"):
        setattr(info, field, getattr(member, field))
    info.pax_headers = {k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    if clamp_mtime is not None and info.mtime > clamp_mtime:
        info.mtime = clamp_mtime
    return info
