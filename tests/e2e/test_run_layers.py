"""Issue #4, end to end: what a RUN's layer holds — deletions as `.wh.`
whiteouts, replaced directories as opaque, hard links as links — read
from the exported layer tars."""

from __future__ import annotations

import subprocess

import pytest

from e2e.helpers import ISOLATIONS, build_image

pytestmark = pytest.mark.e2e



@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_layer_diffs(tmp_path, root, busybox_image, isolation):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN mkdir -p /data/old && echo a > /data/old/a && echo keep > /data/keep && echo gone > /data/gone
RUN rm /data/gone /bin/vi && rm -rf /data/old && mkdir /data/old && echo b > /data/old/b && \\
    echo linked > /data/one && ln /data/one /data/two
""", build_args={"ISOLATION": isolation}, isolation=isolation)
    members = {m.name.rstrip("/"): m for m in built.layer_members(-1)}
    # Deletions of files from lower layers are whiteouts.
    assert "data/.wh.gone" in members and "bin/.wh.vi" in members
    assert members["data/.wh.gone"].isfile() and members["data/.wh.gone"].size == 0
    # A directory removed and made again hides everything below it.
    assert "data/old/.wh..wh..opq" in members
    assert "data/old/b" in members and "data/old/a" not in members
    # Two names of one inode: one file and one hard link to it.
    one, two = members["data/one"], members["data/two"]
    assert {one.type, two.type} == {b"0", b"1"}
    assert (two.linkname or one.linkname) in ("data/one", "data/two")
    # Unchanged files stay out of the layer; the step's own mount points too.
    assert "data/keep" not in members
    assert not any(name.startswith("etc/") for name in members), sorted(members)

    # `tar -tvf` (GNU tar, an independent reader) lists the same entries.
    layer = built.manifest["layers"][-1]["digest"].split(":", 1)[1]
    listing = subprocess.run(["tar", "-tvzf", str(built.layout / "blobs" / "sha256" / layer)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "data/.wh.gone" in listing and "data/old/.wh..wh..opq" in listing
    assert "link to data/one" in listing or "link to data/two" in listing

    # And the image, applied layer on layer, has the result.
    assert not built.exists("/data/gone") and not built.exists("/bin/vi") and not built.exists("/data/old/a")
    assert built.read_text("/data/old/b") == "b\n"
    assert built.path("/data/one").stat().st_ino == built.path("/data/two").stat().st_ino


def test_run_layer_has_no_copied_up_parent_directories(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN echo x > /x\n", local=False,
                        isolation="builtin")
    # but /dev, /proc and /sys that the runtime made in a busybox without
    # them, as in BuildKit 0.13 (testdata/compat/run-rootfs-dirs-missing)
    assert sorted(m.name.rstrip("/") for m in built.layer_members(-1)) == ["dev", "proc", "sys", "x"]


def test_run_layer_keeps_directories_it_changed(tmp_path, root, busybox_image):
    built = build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN echo x > /etc/added\n", local=False,
                        isolation="builtin")
    assert sorted(m.name.rstrip("/") for m in built.layer_members(-1)) == ["dev", "etc", "etc/added", "proc", "sys"]
