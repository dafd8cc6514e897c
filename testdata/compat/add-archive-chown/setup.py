"""ADD --chown with an archive: the members' owners, parents the archive
does not list, and the destination."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "owned.tar", "w") as tar:
        add_member(tar, "listed", tarfile.DIRTYPE, mode=0o700, uid=100, gid=100)
        add_member(tar, "listed/f", data=b"f\n", uid=100, gid=100)
        add_member(tar, "unlisted/g", data=b"g\n", uid=200, gid=200)
