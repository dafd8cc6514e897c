"""Mount targets that do not exist, in directories that do (old mtimes):
BuildKit removes the targets it made; are the parents' mtimes kept?"""

import pathlib
import tarfile


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "dirs.tar", "w") as tar:
        for name in ("old", "old2", "old3"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_500_000_000
            tar.addfile(info)
