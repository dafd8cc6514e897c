"""Files named like archives that are not: an empty file, a gzip magic
followed by garbage, text; and a real one."""

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
    (context / "empty.tar").write_bytes(b"")
    (context / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage that is no deflate stream")
    (context / "text.tar").write_text("not a tar at all\n")
    with tarfile.open(context / "tree.tar", "w") as tar:
        _add(tar, "x", data=b"x\n")
