"""write_layer's bytes are cache keys (a layer's digest) and what
reproducible builds compare: they must not move when its implementation
does. The digests below are those of the path-walking writer before
write_layer read trees through directory fds (commit d9bdba4), for a tree
of every kind of entry with fixed owners, modes and times."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest

from runtime.layer import write_layer

CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
SECOND = 1_600_000_000_123_456_789
PLAIN = "102060d5c519413f6a0a5dfc009c7d085a79da95c3718071fd07362255da061a"
CLAMPED = "5df71bb2d3d8130178d85e06cb87766b173d041aa5599841f76d1b63111ffa0f"


def _file(top: str, rel: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    path = os.path.join(top, rel)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


@pytest.fixture
def tree(tmp_path):
    top = str(tmp_path / "tree")
    old_umask = os.umask(0o022)
    try:
        os.makedirs(os.path.join(top, "etc/deep/er"))
        _file(top, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        _file(top, "etc/empty", b"")
        _file(top, "etc/deep/er/big", bytes(range(256)) * 1000, 0o755)  # streamed, not buffered
        _file(top, "suid", b"\x7fELF" + b"\0" * 100, 0o4755, 1234, 5678)
        _file(top, "bigid", b"id", 0o600, 3_000_000, 4_000_000)  # PAX uid and gid
        os.setxattr(os.path.join(top, "suid"), "security.capability", CAP_NET_RAW)
        os.setxattr(os.path.join(top, "etc/passwd"), "user.note", b"hello")
        os.link(os.path.join(top, "etc/passwd"), os.path.join(top, "passwd-link"))
        os.symlink("etc/passwd", os.path.join(top, "sym"))
        os.symlink("/" + "x" * 150, os.path.join(top, "longlink"))  # PAX linkpath
        os.mkfifo(os.path.join(top, "fifo"))
        os.mknod(os.path.join(top, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(os.path.join(top, "gone"), stat.S_IFCHR, 0)  # a whiteout
        os.makedirs(os.path.join(top, "opaque/in"))
        os.setxattr(os.path.join(top, "opaque"), "trusted.overlay.opaque", b"y")
        long_dir = os.path.join(top, "n" * 90, "m" * 90)  # a PAX path
        os.makedirs(long_dir)
        _file(long_dir, "z" * 99, b"long")
        _file(top, os.fsdecode(b"caf\xe9"), b"latin-1 name")
        os.makedirs(os.path.join(top, "B/a"))
        os.makedirs(os.path.join(top, "a"))
        for rel in ("B/a/1", "a/2", "a.txt", "a-b"):  # byte order, not locale order
            _file(top, rel, rel.encode())
    finally:
        os.umask(old_umask)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(SECOND, SECOND), follow_symlinks=False)
    os.utime(os.path.join(top, "bigid"), ns=(0, -5 * 10**9))  # before 1970: a PAX mtime
    return top


@pytest.mark.parametrize("live", [False, True])
def test_the_bytes_of_every_kind_of_entry_are_unchanged(tree, live):
    out = io.BytesIO()
    assert write_layer(tree, out, live=live) == 0
    assert hashlib.sha256(out.getvalue()).hexdigest() == PLAIN
    out = io.BytesIO()
    write_layer(tree, out, clamp_mtime=1_500_000_000, live=live)
    assert hashlib.sha256(out.getvalue()).hexdigest() == CLAMPED


def test_the_bytes_are_the_same_through_sendfile(tree, tmp_path):
    with open(tmp_path / "layer.tar", "wb") as out:
        write_layer(tree, out)
    assert hashlib.sha256((tmp_path / "layer.tar").read_bytes()).hexdigest() == PLAIN
