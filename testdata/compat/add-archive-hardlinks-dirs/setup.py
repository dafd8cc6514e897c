"""Hard links across directories, to a file in a directory listed later,
and a chain of links."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "links.tar", "w") as tar:
        add_member(tar, "a/orig", data=b"orig\n", mode=0o640, mtime=1_400_000_000)
        add_member(tar, "b/link1", tarfile.LNKTYPE, link="a/orig", mtime=1_400_000_000)
        add_member(tar, "c/d/link2", tarfile.LNKTYPE, link="b/link1", mtime=1_400_000_000)
        add_member(tar, "a", tarfile.DIRTYPE, mode=0o755, mtime=1_300_000_000)
