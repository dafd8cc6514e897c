"""Directories a RUN changes in one way each: only the mtime (touch, or an
entry made and removed), the mode, an entry added, a file below rewritten."""

import io
import pathlib
import tarfile


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "dirs.tar", "w") as tar:
        for name in ("touched", "emptied", "chmodded", "child-added", "file-touched"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_500_000_000
            tar.addfile(info)
        info = tarfile.TarInfo("file-touched/f")
        info.mtime, info.size = 1_500_000_000, 2
        tar.addfile(info, io.BytesIO(b"0\n"))
