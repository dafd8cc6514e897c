"""The forms that digests and cache keys are computed from, in a module
of their own: the solver's cache keys, which the no-op memo's replay
imports, need them without frontend.ops and its ~20 dataclasses (~10 ms
to create at import)."""

from __future__ import annotations

import json


def canonical_bytes(document) -> bytes:
    """The one serialisation every digest of a document uses (vertex ids,
    cache keys): sorted keys, no spaces, ASCII with escapes, so that a
    string holding a lone surrogate (an undecodable byte of a build arg or
    file name) has a form at all instead of failing to encode."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")


# Build args that change how a step reaches the network, not what it
# produces: predefined for every stage, never reported unused, and left out
# of a RUN's cache key (as BuildKit does).
PROXY_ARGS = tuple(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
