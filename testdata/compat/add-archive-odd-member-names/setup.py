"""Absolute member names, ./ prefixes, doubled slashes and a/./b, a member
repeated (the last wins), a directory replaced by a file and the other
way round, and a member naming the destination itself."""

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
    with tarfile.open(context / "odd.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "./", tarfile.DIRTYPE, mode=0o700, mtime=1_100_000_000)
        _add(tar, "/absolute", data=b"abs\n")
        _add(tar, "./dotted", data=b"dot\n")
        _add(tar, "a//doubled", data=b"dbl\n")
        _add(tar, "a/./b/c", data=b"abc\n")
        _add(tar, "twice", data=b"first\n")
        _add(tar, "twice", data=b"second\n", mode=0o600)
        _add(tar, "was-dir", tarfile.DIRTYPE)
        _add(tar, "was-dir/inner", data=b"gone\n")
        _add(tar, "was-dir", data=b"now a file\n")
        _add(tar, "was-file", data=b"gone\n")
        _add(tar, "was-file", tarfile.DIRTYPE, mode=0o711)
