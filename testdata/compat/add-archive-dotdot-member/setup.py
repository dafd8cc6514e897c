"""A member that climbs out of the destination by name (../x)."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "evil.tar", "w") as tar:
        add_member(tar, "ok", data=b"ok\n")
        add_member(tar, "../escaped", data=b"x\n")
