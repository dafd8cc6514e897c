"""A tar of no member (only its end blocks): BuildKit reads no first
header: extracted to nothing, or copied?"""

import pathlib
import tarfile


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "zero-members.tar", "w"):
        pass
