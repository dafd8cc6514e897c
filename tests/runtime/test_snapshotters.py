"""Which snapshotter a root gets (runtime/snapshotters.py), and the
fuse-overlayfs one leaving the kernel overlay's upperdir form."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from fixtures.snapshots import snapshot_of
from fixtures.tools import require_tools

from runtime.fsutil import remove_tree
from runtime.fuse_snapshot import FuseOverlaySnapshotter, fuse_overlayfs
from runtime.snapshot import CopySnapshotter, OverlaySnapshotter
from runtime.snapshotters import ENV_SNAPSHOTTER, UnknownSnapshotter, choose, default_snapshotter
from runtime.whiteouts import OPAQUE_XATTR


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="pybuild-snapshotters-"))
    yield path
    remove_tree(path)


@pytest.fixture
def fuse(root):
    require_tools("fuse-overlayfs")
    binary = fuse_overlayfs()
    assert binary is not None, "/dev/fuse cannot be opened"
    snaps = FuseOverlaySnapshotter(root / "snapshots", binary)
    yield snaps
    assert _fuse_daemons(root) == [], "a fuse-overlayfs daemon outlived its mount"
    assert [n for n in os.listdir(snaps.root) if n.startswith((".mnt-", ".flat-"))] == []


def _fuse_daemons(root: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-af", "fuse-overlayfs"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if str(root) in line]


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


@pytest.mark.parametrize("name, kind", [("overlayfs", OverlaySnapshotter), ("native", CopySnapshotter),
                                        ("fuse-overlayfs", FuseOverlaySnapshotter)])
def test_the_environment_picks_the_snapshotter(root, monkeypatch, name, kind):
    if name == "fuse-overlayfs":
        require_tools("fuse-overlayfs")
    monkeypatch.setenv(ENV_SNAPSHOTTER, name)
    assert type(default_snapshotter(root / "snapshots")) is kind
    assert choose(root / "snapshots").reason == (
        "kernel overlayfs (set by PYBUILD_SNAPSHOTTER)" if name == "overlayfs" else f"set by {ENV_SNAPSHOTTER}")


def test_auto_is_kernel_overlayfs_here_and_the_probe_is_remembered(root, monkeypatch):
    monkeypatch.delenv(ENV_SNAPSHOTTER, raising=False)
    choice = choose(root / "snapshots")
    assert (choice.name, choice.reason) == ("overlayfs", "kernel overlayfs")
    record = json.loads((root / "snapshots" / ".overlay-probe").read_text())
    assert record["overlay"] is True and record["userns"] is False and "userxattr" not in record["flags"]


def test_an_unknown_snapshotter_is_one_clear_error(root, monkeypatch):
    monkeypatch.setenv(ENV_SNAPSHOTTER, "zfs")
    with pytest.raises(UnknownSnapshotter, match="PYBUILD_SNAPSHOTTER=zfs: choose auto, overlayfs, fuse-overlayfs, native"):
        default_snapshotter(root / "snapshots")


def test_fuse_upper_is_the_kernel_overlays_form(fuse):
    base = snapshot_of(fuse, {"keep/a": "a", "replaced/x": "x", "gone": "g"})
    upper = fuse.create()
    with fuse.mount([base], upper) as merged:
        os.makedirs(merged / "new/deeper")  # no lower has it: not opaque
        (merged / "new/deeper/f").write_text("f")
        remove_tree(merged / "replaced")  # a lower dir deleted, then made again: opaque
        os.mkdir(merged / "replaced")
        os.unlink(merged / "gone")  # a lower file deleted: whiteout
        (merged / "temp").write_text("t")  # made and deleted here: nothing
        os.unlink(merged / "temp")
        (merged / "keep/b").write_text("b")  # into a lower dir: copied up, not opaque
    fs = fuse.fs_path(upper)
    names = sorted(str(p.relative_to(fs)) for p in fs.rglob("*"))
    assert names == ["gone", "keep", "keep/b", "new", "new/deeper", "new/deeper/f", "replaced"]
    assert stat.S_ISCHR(os.lstat(fs / "gone").st_mode) and os.lstat(fs / "gone").st_rdev == 0
    assert _opaque(fs / "replaced")
    assert not _opaque(fs / "new") and not _opaque(fs / "new/deeper") and not _opaque(fs / "keep")
    for path in [fs, *fs.rglob("*")]:
        assert not [n for n in os.listxattr(path, follow_symlinks=False) if "fuseoverlayfs" in n], path
    with fuse.mount([base, upper]) as merged:
        assert sorted(os.listdir(merged)) == ["keep", "new", "replaced"]
        assert os.listdir(merged / "replaced") == [] and sorted(os.listdir(merged / "keep")) == ["a", "b"]


def test_fuse_read_only_view_and_errors_leave_nothing(fuse):
    base = snapshot_of(fuse, {"f": "1"})
    with fuse.mount([base]) as merged:
        assert (merged / "f").read_text() == "1"
    upper = fuse.create()
    with pytest.raises(KeyboardInterrupt):
        with fuse.mount([base], upper) as merged:
            (merged / "x").write_text("x")
            raise KeyboardInterrupt
    assert (fuse.fs_path(upper) / "x").read_text() == "x"


def test_auto_falls_back_to_fuse_overlayfs_where_kernel_overlay_fails(root, monkeypatch):
    """The probe's order: kernel overlayfs refused (here by making its probe
    fail as an old kernel's does), fuse-overlayfs is tried for real and
    chosen, with the kernel's reason."""
    require_tools("fuse-overlayfs")
    from runtime import snapshotters

    monkeypatch.delenv(ENV_SNAPSHOTTER, raising=False)
    monkeypatch.setattr(snapshotters, "_overlay_works", lambda root, extra: "mount: Invalid argument")
    snapshotters._overlay_support.cache_clear()
    snapshotters._fuse_support.cache_clear()
    try:
        choice = choose(root / "snapshots")
        assert (choice.name, choice.reason) == ("fuse-overlayfs",
                                                "kernel overlayfs cannot be mounted here (mount: Invalid argument)")
        assert type(default_snapshotter(root / "snapshots")) is FuseOverlaySnapshotter
        assert json.loads((root / "snapshots" / ".fuse-probe").read_text())["why"] == ""
    finally:
        snapshotters._overlay_support.cache_clear()
        snapshotters._fuse_support.cache_clear()
