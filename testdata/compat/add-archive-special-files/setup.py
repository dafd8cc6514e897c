"""Device nodes, a fifo, setuid/setgid/sticky modes, and directories whose
modes and times come from their headers or from nothing (implicit
parents)."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "special.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("null")
        info.type, info.devmajor, info.devminor, info.mode, info.mtime = tarfile.CHRTYPE, 1, 3, 0o666, 1_500_000_000
        tar.addfile(info)
        info = tarfile.TarInfo("loop")
        info.type, info.devmajor, info.devminor, info.mode, info.mtime = tarfile.BLKTYPE, 7, 0, 0o660, 1_500_000_000
        tar.addfile(info)
        add_member(tar, "pipe", tarfile.FIFOTYPE, mode=0o600)
        add_member(tar, "suid", data=b"s\n", mode=0o4755)
        add_member(tar, "sgid-dir", tarfile.DIRTYPE, mode=0o2775)
        add_member(tar, "sticky", tarfile.DIRTYPE, mode=0o1777)
        add_member(tar, "implicit/parent/file", data=b"i\n")
        add_member(tar, "listed", tarfile.DIRTYPE, mode=0o700, mtime=1_200_000_000, uid=5, gid=6)
        add_member(tar, "listed/inner", data=b"x\n")
