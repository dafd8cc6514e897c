"""ADD --chown with an archive: the members' owners, parents the archive
does not list, and the destination."""

import io
import pathlib
import tarfile

def _add(tar, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", mtime=1_500_000_000, uid=0, gid=0,
         pax=None):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime, info.uid, info.gid = kind, mode, link, mtime, uid, gid
    if pax:
        info.pax_headers = pax
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "owned.tar", "w") as tar:
        _add(tar, "listed", tarfile.DIRTYPE, mode=0o700, uid=100, gid=100)
        _add(tar, "listed/f", data=b"f\n", uid=100, gid=100)
        _add(tar, "unlisted/g", data=b"g\n", uid=200, gid=200)
