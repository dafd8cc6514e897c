"""Files named like archives that are not: an empty file, a gzip magic
followed by garbage, text; and a real one."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    (context / "empty.tar").write_bytes(b"")
    (context / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage that is no deflate stream")
    (context / "text.tar").write_text("not a tar at all\n")
    with tarfile.open(context / "tree.tar", "w") as tar:
        add_member(tar, "x", data=b"x\n")
