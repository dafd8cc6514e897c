"""Absolute member names, ./ prefixes, doubled slashes and a/./b, a member
repeated (the last wins), a directory replaced by a file and the other
way round, and a member naming the destination itself."""

import pathlib
import tarfile

from compat.tarmembers import add_member


def make(context: pathlib.Path) -> None:
    with tarfile.open(context / "odd.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "./", tarfile.DIRTYPE, mode=0o700, mtime=1_100_000_000)
        add_member(tar, "/absolute", data=b"abs\n")
        add_member(tar, "./dotted", data=b"dot\n")
        add_member(tar, "a//doubled", data=b"dbl\n")
        add_member(tar, "a/./b/c", data=b"abc\n")
        add_member(tar, "twice", data=b"first\n")
        add_member(tar, "twice", data=b"second\n", mode=0o600)
        add_member(tar, "was-dir", tarfile.DIRTYPE)
        add_member(tar, "was-dir/inner", data=b"gone\n")
        add_member(tar, "was-dir", data=b"now a file\n")
        add_member(tar, "was-file", data=b"gone\n")
        add_member(tar, "was-file", tarfile.DIRTYPE, mode=0o711)
