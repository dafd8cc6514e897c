"""An archive whose member symlinks point above the destination (`..`,
`../..`, `../etc`) but still inside the image: BuildKit stores them as they
are (they are followed only inside the image)."""

import io
import pathlib
import tarfile


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "a.tar", "w") as tar:
        for name, target in (("up", ".."), ("d/up2", "../.."), ("etc", "../etc"), ("d/far", "../../../../x")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 1_500_000_000
            tar.addfile(info)
        info = tarfile.TarInfo("d/f")
        info.size, info.mode, info.mtime = 2, 0o644, 1_500_000_000
        tar.addfile(info, io.BytesIO(b"f\n"))
