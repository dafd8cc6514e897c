"""How a deletion is written down: in an OCI layer tar, and in a snapshot
(overlayfs's upperdir form). runtime.layer turns one into the other;
squashing layers and merging snapshots read them."""

import os
import stat

from runtime.userns import CAP_SYS_ADMIN, has_capability, in_user_namespace

# A layer's `DIR/.wh.NAME` deletes NAME below DIR; `DIR/.wh..wh..opq`
# hides what lower layers put in DIR (OCI image spec, layer.md).
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# The xattr namespace pybuild's own marks live in. trusted.* needs
# CAP_SYS_ADMIN in the initial user namespace; inside any other (rootless,
# or root of a container with one) overlay is mounted with `userxattr` and
# keeps its marks in user.* instead. Root of a container without
# CAP_SYS_ADMIN (docker's default) cannot write trusted.* either: there
# only the copying snapshotter works, and its marks go to user.* too.
# Read once: a process enters its namespace before it imports this
# (runtime/userns.py).
XATTR_NAMESPACE = "user." if in_user_namespace() or not has_capability(CAP_SYS_ADMIN) else "trusted."

# In a snapshot a deleted name is a 0/0 character device, and a directory
# hiding the lower ones carries this xattr, "y". Every xattr of overlay's
# own starts with the prefix.
OVERLAY_XATTR_PREFIX = XATTR_NAMESPACE + "overlay."
OPAQUE_XATTR = OVERLAY_XATTR_PREFIX + "opaque"
# Overlay's marks under either namespace, and fuse-overlayfs's own: never
# taken from a layer nor written into one, so a build carries the same
# xattrs whatever mounted its snapshots.
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")


def is_whiteout(st: os.stat_result) -> bool:
    """Whether the lstat `st` is overlay's whiteout: a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
