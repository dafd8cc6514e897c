"""File capabilities (security.capability) as a layer carries them."""

from __future__ import annotations

CAPABILITY_XATTR = "security.capability"
_CAP_REVISION_MASK = 0xFF000000
_CAP_REVISION_2, _CAP_REVISION_3 = 0x02000000, 0x03000000


def portable_capability(value: bytes) -> bytes:
    """A v3 file capability names the host uid of its namespace's root
    (its rootid): in an image that uid means nothing, and read as root it
    is the host's, in a user namespace the namespace's. The same sets
    without it (v2), as a layer made anywhere carries them."""
    if len(value) != 24:
        return value
    magic = int.from_bytes(value[:4], "little")
    if magic & _CAP_REVISION_MASK != _CAP_REVISION_3:
        return value
    return ((magic & ~_CAP_REVISION_MASK) | _CAP_REVISION_2).to_bytes(4, "little") + value[4:20]
