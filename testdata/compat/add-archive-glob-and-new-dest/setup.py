"""Two archives matched by a glob, with overlapping members."""

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
    (context / "archives").mkdir()
    with tarfile.open(context / "archives" / "one.tar", "w") as tar:
        _add(tar, "shared/from-one", data=b"1\n")
        _add(tar, "same-name", data=b"one\n")
    with tarfile.open(context / "archives" / "two.tar", "w") as tar:
        _add(tar, "shared/from-two", data=b"2\n")
        _add(tar, "same-name", data=b"two\n")
