"""ADD applies an archive's whiteout-named members, as BuildKit 0.13 does
(testdata/compat/add-archive-whiteout-names): `.wh.x` removes x,
`.wh..wh..opq` empties its directory but for the archive's own members.
Aimed through a symlink the archive planted at a host directory, they
remove only inside the image: the host directory keeps every entry."""

from __future__ import annotations

import os
import tarfile

import pytest

from builder.errors import PybuildError
from e2e.helpers import build_image
from security.hostile import layer, member


@pytest.fixture
def host_dir(tmp_path):
    path = tmp_path / "host-dir"
    path.mkdir()
    (path / "victim").write_text("host\n")
    (path / "sub").mkdir()
    (path / "sub" / "kept").write_text("host\n")
    return path


def test_whiteouts_through_a_planted_symlink_stay_in_the_image(tmp_path, busybox_image, host_dir):
    archive = layer(
        member("link", tarfile.SYMTYPE, link=str(host_dir)),
        member(f"{host_dir}/victim", data=b"image\n"),
        member("link/.wh.victim"),
        member("abs", tarfile.SYMTYPE, link=str(host_dir / "sub")),
        member(f"{host_dir}/sub/inner", data=b"image\n"),
        member("abs/.wh..wh..opq"),
        member("abs/new", data=b"after\n"),
    )
    built = build_image(tmp_path, tmp_path / "root", f"FROM {busybox_image.ref}\nADD a.tar /d/\n",
                        files={"a.tar": archive})
    inside = built.path(f"/d{host_dir}")
    assert not os.path.lexists(inside / "victim")
    assert sorted(os.listdir(inside / "sub")) == ["new"]
    assert not any(name.startswith(".wh.") for name in os.listdir(built.path("/d")))
    assert (host_dir / "victim").read_text() == "host\n"
    assert (host_dir / "sub" / "kept").read_text() == "host\n"
    assert sorted(os.listdir(host_dir)) == ["sub", "victim"]


@pytest.mark.parametrize("name", [".wh.", ".wh..", "sub/.wh.."])
def test_a_whiteout_of_nothing_or_of_its_directory_is_refused(tmp_path, busybox_image, host_dir, name):
    archive = layer(member("sub/kept", data=b"k\n"), member(name))
    with pytest.raises(PybuildError, match="invalid whiteout"):
        build_image(tmp_path, tmp_path / "root", f"FROM {busybox_image.ref}\nADD a.tar /d/\n",
                    files={"a.tar": archive})
    assert sorted(os.listdir(host_dir)) == ["sub", "victim"]
