"""Extracted over an existing tree, destination without a trailing slash:
directories merge (an existing one keeps its metadata unless the archive
lists it), a file replaces a file, a file replaces a directory, a member
through an image symlink lands where it points inside the image."""

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
    with tarfile.open(context / "over.tar", "w") as tar:
        _add(tar, "keep/new", data=b"new\n")
        _add(tar, "file", data=b"new\n", mode=0o600)
        _add(tar, "dir", data=b"a file now\n")
        _add(tar, "link/through-link", data=b"via image link\n")
