"""Members named as overlay whiteouts (.wh.victim, sub/.wh..wh..opq): an
ADD archive is no layer, so what does BuildKit 0.13 make of them?"""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "wh.tar", "w") as tar:
        add_member(tar, ".wh.victim")
        add_member(tar, "sub/.wh..wh..opq")
        add_member(tar, "sub/new", data=b"new\n")
