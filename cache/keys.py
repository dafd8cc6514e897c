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
import json
from typing import Mapping, Sequence

KEY_VERSION = "pybuild.cachekey.v1"

# BuildKit leaves proxy settings out of RUN's key: they change how a step
# reaches the network, not what it produces.
PROXY_VARS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)


def canonical_bytes(document) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def cache_key(op_canonical: Mapping, input_keys: Sequence[str], content: str | None = None) -> str:
    body = dict(op_canonical)
    body.pop("inputs", None)
    if "env" in body:
        body["env"] = [e for e in body["env"] if e.split("=", 1)[0] not in PROXY_VARS]
    document = {"version": KEY_VERSION, "op": body, "inputs": list(input_keys)}
    if content is not None:
        document["content"] = content
    return "sha256:" + hashlib.sha256(canonical_bytes(document)).hexdigest()


def chain_id(diff_ids: Sequence[str]) -> str:
    """The OCI chain ID of a layer stack: ChainID(L0) = DiffID(L0),
    ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    current = None
    for diff_id in diff_ids:
        if current is None:
            current = diff_id
        else:
            current = "sha256:" + hashlib.sha256(f"{current} {diff_id}".encode()).hexdigest()
    if current is None:
        raise ValueError("chain_id of an empty layer stack")
    return current
