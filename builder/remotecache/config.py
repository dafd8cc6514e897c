"""The exported build cache: what it holds and how it is written as JSON.

A cache export is an OCI image manifest (so any distribution registry
stores it, as BuildKit's `image-manifest=true` cache does) whose config
blob is a `CacheConfig` and whose layers are the layer blobs it refers to:

    {"version": 1,
     "layers":  [{"digest", "size", "mediaType", "diffID", "empty"}, ...],
     "records": [{"key": "sha256:...", "chain": [0, 1, 4], "created": 1.7e9}, ...],
     "cacheMounts": [{"name": "<dir under ROOT/cachemounts>", "layer": 5}, ...]}

A record maps a cache key (builder/solver) to its result, a chain of layers
bottom to top given as indexes into `layers`. Cache mount contents are
plain tar+gzip blobs and are never a step's result. For `type=inline` the
same document (without cacheMounts) sits in the image config under
INLINE_KEY and its layers are the image's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from builder.errors import PybuildError
from builder.image import Descriptor
from cache.digest import Digest, InvalidDigest

CACHE_CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
CACHE_MOUNT_MEDIA_TYPE = "application/vnd.pybuild.cache.mount.v1.tar+gzip"
INLINE_KEY = "pybuild.cache.v1"
VERSION = 1


class CacheConfigError(PybuildError):
    """An imported cache that pybuild cannot read."""


@dataclass(frozen=True)
class CacheLayer:
    descriptor: Descriptor  # the blob (compressed)
    diff_id: Digest
    empty: bool = False

    def to_json(self) -> dict:
        d = self.descriptor
        return {"digest": str(d.digest), "size": d.size, "mediaType": d.media_type,
                "diffID": str(self.diff_id), "empty": self.empty}


@dataclass(frozen=True)
class CacheRecord:
    key: str
    chain: tuple[int, ...]
    created: float


@dataclass
class CacheConfig:
    layers: list[CacheLayer] = field(default_factory=list)
    records: dict[str, CacheRecord] = field(default_factory=dict)
    mounts: dict[str, int] = field(default_factory=dict)  # cache mount dir name -> layer index
    _positions: dict[tuple[Digest, Digest], int] = field(default_factory=dict, repr=False)

    def add_layer(self, layer: CacheLayer) -> int:
        ident = (layer.descriptor.digest, layer.diff_id)
        if ident not in self._positions:
            self._positions[ident] = len(self.layers)
            self.layers.append(layer)
        return self._positions[ident]

    def add_record(self, key: str, layers: list[CacheLayer], created: float) -> None:
        self.records[key] = CacheRecord(key, tuple(self.add_layer(l) for l in layers), created)

    def chain_of(self, key: str) -> list[CacheLayer] | None:
        record = self.records.get(key)
        if record is None:
            return None
        return [self.layers[i] for i in record.chain]

    def to_json(self) -> dict:
        body = {
            "version": VERSION,
            "layers": [l.to_json() for l in self.layers],
            "records": [{"key": r.key, "chain": list(r.chain), "created": r.created}
                        for r in sorted(self.records.values(), key=lambda r: r.key)],
        }
        if self.mounts:
            body["cacheMounts"] = [{"name": n, "layer": i} for n, i in sorted(self.mounts.items())]
        return body

    @classmethod
    def from_json(cls, body: Mapping, where: str) -> "CacheConfig":
        if not isinstance(body, Mapping) or body.get("version") != VERSION:
            raise CacheConfigError(f"cache {where}: unsupported cache config version "
                                   f"{body.get('version') if isinstance(body, Mapping) else '?'!r}")
        config = cls()
        try:
            for raw in body.get("layers") or []:
                desc = Descriptor(str(raw["mediaType"]), Digest.parse(raw["digest"]), int(raw["size"]))
                config.add_layer(CacheLayer(desc, Digest.parse(raw["diffID"]), bool(raw.get("empty"))))
            count = len(config.layers)
            for raw in body.get("records") or []:
                chain = tuple(int(i) for i in raw["chain"])
                if any(i < 0 or i >= count for i in chain):
                    raise ValueError(f"record {raw['key']} refers to a missing layer")
                config.records[str(raw["key"])] = CacheRecord(str(raw["key"]), chain, float(raw["created"]))
            for raw in body.get("cacheMounts") or []:
                name, index = str(raw["name"]), int(raw["layer"])
                if "/" in name or name in ("", ".", "..") or not 0 <= index < count:
                    raise ValueError(f"bad cache mount entry {name!r}")
                config.mounts[name] = index
        except (KeyError, TypeError, ValueError, InvalidDigest) as exc:
            raise CacheConfigError(f"cache {where}: malformed cache config: {exc}") from None
        return config
