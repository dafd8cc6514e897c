"""Names past ustar's 100 and 255 bytes (GNU longname and PAX path
records), a long symlink target, PAX mtimes with a fraction, ids past
ustar's octal fields, and user/group names the image does not have."""

import io
import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    deep = "/".join(["segment-%02d-abcdefghij" % i for i in range(14)])
    with tarfile.open(context / "long.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, deep + "/file-with-a-long-name-" + "x" * 120, data=b"deep\n")
        add_member(tar, "long-link", tarfile.SYMTYPE, link=deep + "/target")
        add_member(tar, "fraction", data=b"f\n", pax={"mtime": "1500000000.75"})
        add_member(tar, "big-ids", data=b"b\n", uid=3_000_000, gid=4_000_000)
        info = tarfile.TarInfo("named-owner")
        info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = 2, 1_500_000_000, 12, 34, "nobody-here", "nogroup-here"
        tar.addfile(info, io.BytesIO(b"n\n"))
    with tarfile.open(context / "gnu.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        add_member(tar, "gnu-" + "y" * 150, data=b"gnu\n")
        add_member(tar, "gnu-link", tarfile.SYMTYPE, link="z" * 150)
