"""PAX xattr records on archive members (user.*): are they set?"""

import io
import pathlib
import tarfile

def _add(tar, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, mtime=1_500_000_000, pax=None):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, mtime
    if pax:
        info.pax_headers = pax
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "x.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "file", data=b"x\n", pax={"SCHILY.xattr.user.comment": "hello"})
        _add(tar, "dir", tarfile.DIRTYPE, mode=0o755, pax={"SCHILY.xattr.user.dir": "d"})
