"""/etc has hosts but no resolv.conf (old mtimes): the runtime makes the
missing mount point and removes it after the run; /etc's mtime is the
run's."""

import io
import pathlib
import tarfile


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "etc.tar", "w") as tar:
        for name in ("dev", "proc", "sys", "etc", "etc/hosts"):
            info = tarfile.TarInfo(name)
            info.mtime = 1_500_000_000
            if "/" in name:
                info.mode, info.size = 0o644, 2
                tar.addfile(info, io.BytesIO(b"x\n"))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
