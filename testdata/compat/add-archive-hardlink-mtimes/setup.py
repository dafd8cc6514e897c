"""Hard-linked members whose headers disagree on mtime, mode and owner with
the member they link to: in a subdirectory, to a symlink, and to a file a
later member rewrites."""

import io
import pathlib
import tarfile


def _member(name: str, mtime: int, *, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"",
            mode: int = 0o644, uid: int = 0) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uid, info.gid, info.type = mtime, mode, uid, uid, kind
    if link:
        info.linkname = link
        return info, None
    info.size = len(data)
    return info, io.BytesIO(data)


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "a.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in (
            _member("a", 1_400_000_000, data=b"a\n"),
            _member("b", 1_500_000_000, kind=tarfile.LNKTYPE, link="a", mode=0o600, uid=7),
            _member("c", 1_450_000_000, kind=tarfile.LNKTYPE, link="a", mode=0o640, uid=8),
            _member("sub/x", 1_300_000_000, data=b"x\n", mode=0o755),
            _member("sub/deeper/y", 1_600_000_000, kind=tarfile.LNKTYPE, link="sub/x"),
            _member("s", 1_200_000_000, kind=tarfile.SYMTYPE, link="a"),
            _member("t", 1_700_000_000, kind=tarfile.LNKTYPE, link="s", uid=9),
            _member("m", 1_100_000_000, data=b"m\n"),
            _member("n", 1_150_000_000, kind=tarfile.LNKTYPE, link="m"),
            _member("m", 1_120_000_000, data=b"m2\n"),
        ):
            tar.addfile(info, data)
