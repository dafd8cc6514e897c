"""PAX xattr records on archive members (user.*): are they set?"""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "x.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "file", data=b"x\n", pax={"SCHILY.xattr.user.comment": "hello"})
        add_member(tar, "dir", tarfile.DIRTYPE, mode=0o755, pax={"SCHILY.xattr.user.dir": "d"})
