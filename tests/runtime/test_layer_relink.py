"""apply_layer: a hard link to an entry that a later member replaced or
removed is refused as unsafe, never attempted (found by tests/security's
fuzzing: linking to a directory fails with EPERM)."""

from __future__ import annotations

import io
import tarfile

import pytest

from runtime.errors import UnsafeLayer
from runtime.layer import apply_layer


def _tar(*members: tarfile.TarInfo) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"") if member.isreg() else None)
    out.seek(0)
    return out


def _member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o755
    return info


@pytest.mark.parametrize("members", [
    # a symlink replaced by a directory, then linked to
    [_member("l", tarfile.SYMTYPE, "a"), _member("l", tarfile.DIRTYPE), _member("a", tarfile.LNKTYPE, "l")],
    # a file removed with its directory, then linked to
    [_member("d", tarfile.DIRTYPE), _member("d/f", tarfile.REGTYPE), _member("d", tarfile.SYMTYPE, "x"),
     _member("a", tarfile.LNKTYPE, "d/f")],
])
def test_link_to_a_replaced_entry_is_refused(tmp_path, members):
    with pytest.raises(UnsafeLayer, match="not an earlier entry"):
        apply_layer(_tar(*members), tmp_path)


def test_link_to_a_replaced_file_links_the_new_one(tmp_path):
    apply_layer(_tar(_member("f", tarfile.SYMTYPE, "x"), _member("f", tarfile.REGTYPE),
                     _member("g", tarfile.LNKTYPE, "f")), tmp_path)
    assert (tmp_path / "f").stat().st_ino == (tmp_path / "g").stat().st_ino
