"""A rootfs that has /dev, /proc, /sys, /run and /etc's hosts, resolv.conf
and hostname, all with old mtimes: does a RUN leave any of them changed?"""

import io
import pathlib
import tarfile


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "rootfs.tar", "w") as tar:
        for name in ("dev", "proc", "sys", "run", "etc", "etc/hosts", "etc/resolv.conf", "etc/hostname"):
            info = tarfile.TarInfo(name)
            info.mtime = 1_500_000_000
            if "/" in name:
                info.mode, info.size = 0o644, 3
                tar.addfile(info, io.BytesIO(b"x\n\n"[:3]))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
