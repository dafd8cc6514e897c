"""Cache keys: what decides that a step's result can be reused.

A key is the sha256 of a canonical JSON document with a versioned type tag:
the op's canonical form with its input vertex ids replaced by the inputs'
cache keys, plus the content checksum of whatever files the op reads from
outside the graph (the build context). Locations, display names, secrets'
values and cache mounts' contents are never part of it. Bump KEY_VERSION
whenever the meaning of a key changes, so old entries simply stop matching.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

from frontend.canonical import PROXY_ARGS, canonical_bytes

# v2: serialised by frontend.canonical.canonical_bytes (ASCII escapes), as vertex ids are.
KEY_VERSION = "pybuild.cachekey.v2"


class CacheKey(str):
    """A step's cache key ("sha256:<hex>"), kept apart from vertex ids and
    digests in signatures. A str, so that the index, the memo and --explain
    records store and compare it exactly as the bare string they hold."""

    __slots__ = ()


def cache_key(op_canonical: Mapping, input_keys: Sequence[CacheKey], content: str | None = None) -> CacheKey:
    body = dict(op_canonical)
    body.pop("inputs", None)
    if "env" in body:
        body["env"] = [e for e in body["env"] if e.split("=", 1)[0] not in PROXY_ARGS]
    document = {"version": KEY_VERSION, "op": body, "inputs": list(input_keys)}
    if content is not None:
        document["content"] = content
    return CacheKey("sha256:" + hashlib.sha256(canonical_bytes(document)).hexdigest())
