"""setup.py of the xattr-context-* cases: xattrs on context files: user.*,
trusted.* and security.capability
(cap_net_bind_service, VFS_CAP_REVISION_2), on files and a directory."""
import os

CAPABILITY = bytes.fromhex("0100000200040000000000000000000000000000")


def make(context):
    os.setxattr(context / "u.txt", "user.note", b"hello")
    os.setxattr(context / "d", "user.dir", b"dirval")
    os.setxattr(context / "d" / "f", "user.inner", b"x")
    os.setxattr(context / "cap", "security.capability", CAPABILITY)
    os.setxattr(context / "t.txt", "trusted.t", b"tv")
