"""Two archives matched by a glob, with overlapping members."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    (context / "archives").mkdir()
    with tarfile.open(context / "archives" / "one.tar", "w") as tar:
        add_member(tar, "shared/from-one", data=b"1\n")
        add_member(tar, "same-name", data=b"one\n")
    with tarfile.open(context / "archives" / "two.tar", "w") as tar:
        add_member(tar, "shared/from-two", data=b"2\n")
        add_member(tar, "same-name", data=b"two\n")
