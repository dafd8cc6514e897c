"""Members written through symlinks an earlier member planted, which climb
above the destination (`up -> ..`) and above the image's root (`far ->
../../../../..`): BuildKit extracts in a chroot of the destination, so each
resolves as if the destination were `/`."""

import io
import pathlib
import tarfile


def _add(tar: tarfile.TarFile, name: str, *, link: str = "", data: bytes = b"") -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 1_500_000_000
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "a.tar", "w") as tar:
        _add(tar, "up", link="..")
        _add(tar, "up/via-up", data=b"up\n")
        _add(tar, "far", link="../../../../..")
        _add(tar, "far/tmp/via-far", data=b"far\n")
