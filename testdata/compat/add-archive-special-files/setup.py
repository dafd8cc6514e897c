"""Device nodes, a fifo, setuid/setgid/sticky modes, and directories whose
modes and times come from their headers or from nothing (implicit
parents)."""

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
    with tarfile.open(context / "special.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("null")
        info.type, info.devmajor, info.devminor, info.mode, info.mtime = tarfile.CHRTYPE, 1, 3, 0o666, 1_500_000_000
        tar.addfile(info)
        info = tarfile.TarInfo("loop")
        info.type, info.devmajor, info.devminor, info.mode, info.mtime = tarfile.BLKTYPE, 7, 0, 0o660, 1_500_000_000
        tar.addfile(info)
        _add(tar, "pipe", tarfile.FIFOTYPE, mode=0o600)
        _add(tar, "suid", data=b"s\n", mode=0o4755)
        _add(tar, "sgid-dir", tarfile.DIRTYPE, mode=0o2775)
        _add(tar, "sticky", tarfile.DIRTYPE, mode=0o1777)
        _add(tar, "implicit/parent/file", data=b"i\n")
        _add(tar, "listed", tarfile.DIRTYPE, mode=0o700, mtime=1_200_000_000, uid=5, gid=6)
        _add(tar, "listed/inner", data=b"x\n")
