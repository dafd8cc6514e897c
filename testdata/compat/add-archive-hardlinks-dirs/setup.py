"""Hard links across directories, to a file in a directory listed later,
and a chain of links."""

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
    with tarfile.open(context / "links.tar", "w") as tar:
        _add(tar, "a/orig", data=b"orig\n", mode=0o640, mtime=1_400_000_000)
        _add(tar, "b/link1", tarfile.LNKTYPE, link="a/orig", mtime=1_400_000_000)
        _add(tar, "c/d/link2", tarfile.LNKTYPE, link="b/link1", mtime=1_400_000_000)
        _add(tar, "a", tarfile.DIRTYPE, mode=0o755, mtime=1_300_000_000)
