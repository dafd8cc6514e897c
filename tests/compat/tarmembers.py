"""Tar members for the cases' setup.py: the archives ADD cases extract are
written member by member, with the header fields the case is about."""

from __future__ import annotations

import io
import tarfile


def add_member(tar: tarfile.TarFile, name: str, kind=tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
               link: str = "", mtime: int = 1_500_000_000, uid: int = 0, gid: int = 0, pax=None) -> None:
    """Append one member to `tar`; only a regular file carries `data`."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime, info.uid, info.gid = kind, mode, link, mtime, uid, gid
    if pax:
        info.pax_headers = pax
    regular = kind == tarfile.REGTYPE
    info.size = len(data) if regular else 0
    tar.addfile(info, io.BytesIO(data) if regular else None)
