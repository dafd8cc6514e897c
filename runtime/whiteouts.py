"""How a deletion is written down: in an OCI layer tar, and in a snapshot
(overlayfs's upperdir form). runtime.layer turns one into the other;
squashing layers and merging snapshots read them."""

import os
import stat

# A layer's `DIR/.wh.NAME` deletes NAME below DIR; `DIR/.wh..wh..opq`
# hides what lower layers put in DIR (OCI image spec, layer.md).
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# In a snapshot a deleted name is a 0/0 character device, and a directory
# hiding the lower ones carries this xattr, "y". Every xattr of overlay's
# own starts with the prefix.
OVERLAY_XATTR_PREFIX = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    """Whether the lstat `st` is overlay's whiteout: a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
