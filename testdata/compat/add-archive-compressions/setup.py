"""The same small tree in every compression BuildKit 0.13 reads, one tar
under a name that says nothing, and compressed files that hold no tar."""

import bz2
import gzip
import io
import lzma
import pathlib
import tarfile

from compat.tarmembers import add_member

import zstandard


def make(context: pathlib.Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "top", tarfile.DIRTYPE, mode=0o750, mtime=1_400_000_000)
        add_member(tar, "top/file", data=b"content\n", mode=0o640)
        add_member(tar, "top/link", tarfile.SYMTYPE, link="file", mtime=1_300_000_000)
        add_member(tar, "exe", data=b"#!/bin/sh\n", mode=0o755, uid=1000, gid=1000)
    plain = buffer.getvalue()
    (context / "tree.tar").write_bytes(plain)
    (context / "tree-named.txt").write_bytes(plain)
    (context / "tree.tar.gz").write_bytes(gzip.compress(plain, mtime=0))
    (context / "tree.tar.bz2").write_bytes(bz2.compress(plain))
    (context / "tree.tar.xz").write_bytes(lzma.compress(plain))
    (context / "tree.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(plain))
    (context / "notatar.gz").write_bytes(gzip.compress(b"just text\n", mtime=0))
    (context / "notatar.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"just text\n"))
