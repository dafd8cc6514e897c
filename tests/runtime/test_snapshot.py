"""Snapshotters on real overlayfs (and the copy fallback) in temp dirs."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from fixtures.snapshots import snapshot_of
from fixtures.tools import require_tools

from runtime.fsutil import remove_tree
from runtime.fuse_snapshot import FuseOverlaySnapshotter, fuse_overlayfs
from runtime.snapshot import CopySnapshotter, OverlaySnapshotter, UnknownSnapshot
from runtime.snapshotters import default_snapshotter


def _mounts_under(top: Path) -> list[str]:
    # Only under our own directory: other processes may mount meanwhile.
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return [point for point in points if point == str(top) or point.startswith(f"{top}/")]


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="pybuild-snap-"))
    yield path
    assert _mounts_under(path) == [], "a mount was left behind"
    leftovers = [name for name in os.listdir(path) if name.startswith((".mnt-", ".flat-", ".probe-"))]
    assert leftovers == []
    remove_tree(path)
    assert not path.exists()


@pytest.fixture(params=["overlay", "copy", "fuse-overlayfs"])
def snapshotter(request, root):
    if request.param == "fuse-overlayfs":
        require_tools("fuse-overlayfs")
        binary = fuse_overlayfs()
        assert binary is not None, "/dev/fuse cannot be opened"
        return FuseOverlaySnapshotter(root / "snapshots", binary)
    kind = OverlaySnapshotter if request.param == "overlay" else CopySnapshotter
    return kind(root / "snapshots")


def _is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_create_lookup_remove(root):
    snaps = OverlaySnapshotter(root / "snapshots")
    first, second = snaps.create(), snaps.create()
    assert first != second and len(first) <= 10
    assert snaps.fs_path(first) == root / "snapshots" / first / "fs"
    assert stat.S_IMODE(os.stat(snaps.fs_path(first)).st_mode) == 0o755
    assert snaps.exists(first) and snaps.ids() == sorted([first, second])
    locked = snaps.fs_path(first) / "ro/deeper"
    locked.mkdir(parents=True)
    os.chmod(locked, 0)
    os.chmod(locked.parent, 0o555)
    snaps.remove(first)
    assert not snaps.exists(first) and snaps.ids() == [second]
    with pytest.raises(UnknownSnapshot):
        snaps.fs_path("../etc")
    snaps.remove(second)


def test_default_snapshotter_uses_overlay_here(root):
    assert isinstance(default_snapshotter(root / "snapshots"), OverlaySnapshotter)


def test_writable_mount_records_changes_in_upper(snapshotter):
    base = snapshot_of(snapshotter, {"keep": "k", "gone": "g", "dir/a": "a", "dir/b": "b", "sub/x": "x"})
    upper = snapshotter.create()
    with snapshotter.mount([base], upper) as merged:
        assert (merged / "keep").read_text() == "k"
        (merged / "gone").unlink()
        remove_tree(merged / "dir")
        (merged / "dir").mkdir()
        (merged / "dir/new").write_text("n")
        (merged / "sub/x").write_text("changed")
        (merged / "added").write_text("+")
        os.link(merged / "added", merged / "added-link")
    fs = snapshotter.fs_path(upper)
    assert _is_whiteout(fs / "gone")
    assert os.getxattr(fs / "dir", "trusted.overlay.opaque") == b"y"
    assert (fs / "dir/new").read_text() == "n"
    assert not (fs / "keep").exists()
    assert (fs / "sub/x").read_text() == "changed"
    assert os.stat(fs / "added").st_ino == os.stat(fs / "added-link").st_ino
    assert not (snapshotter.root / upper / "work").exists()

    # The chain base+upper seen from above: deleted, replaced, added.
    with snapshotter.mount([base, upper]) as merged:
        assert sorted(os.listdir(merged)) == ["added", "added-link", "dir", "keep", "sub"]
        assert os.listdir(merged / "dir") == ["new"]


def test_upper_kept_across_mounts(snapshotter):
    base = snapshot_of(snapshotter, {"a": "1", "b": "2", "d/x": "x"})
    upper = snapshotter.create()
    with snapshotter.mount([base], upper) as merged:
        (merged / "a").unlink()
        (merged / "new").write_text("n")
        remove_tree(merged / "d")
        (merged / "d").mkdir()
    with snapshotter.mount([base], upper) as merged:
        assert sorted(os.listdir(merged)) == ["b", "d", "new"]
        assert os.listdir(merged / "d") == []
        (merged / "more").write_text("m")
    fs = snapshotter.fs_path(upper)
    assert _is_whiteout(fs / "a") and (fs / "new").exists() and (fs / "more").exists()
    assert os.getxattr(fs / "d", "trusted.overlay.opaque") == b"y"


def test_read_only_views(root):
    snaps = OverlaySnapshotter(root / "snapshots")
    one = snapshot_of(snaps, {"f": "1"})
    two = snapshot_of(snaps, {"g": "2", "f": None})
    for lowers, expected in (([], []), ([one], ["f"]), ([one, two], ["g"])):
        with snaps.mount(lowers) as merged:
            assert sorted(os.listdir(merged)) == expected
            with pytest.raises(OSError) as info:
                (merged / "new").write_text("x")
            assert info.value.errno == errno.EROFS


def test_no_lowers_with_upper_is_the_upper_itself(snapshotter):
    upper = snapshotter.create()
    with snapshotter.mount([], upper) as merged:
        (merged / "f").write_text("x")
        os.mkdir(merged / "d")
    assert (snapshotter.fs_path(upper) / "f").read_text() == "x"
    assert (snapshotter.fs_path(upper) / "d").is_dir()


def test_unmounts_on_exception_and_interrupt(root):
    snaps = OverlaySnapshotter(root / "snapshots")
    base = snapshot_of(snaps, {"f": "1"})
    upper = snaps.create()
    for error in (ValueError, KeyboardInterrupt):
        with pytest.raises(error):
            with snaps.mount([base], upper) as merged:
                (merged / "x").write_text("x")
                raise error()
    assert not (snaps.root / upper / "work").exists()


def test_300_lowers_need_no_flattening(root):
    snaps = OverlaySnapshotter(root / "snapshots")
    lowers = [snapshot_of(snaps, {f"f{i}": str(i)}) for i in range(300)]
    with snaps.mount(lowers, snaps.create()) as merged:
        assert not [n for n in os.listdir(snaps.root) if n.startswith(".flat-")]
        assert len(os.listdir(merged)) == 300


@pytest.mark.parametrize("upper", [True, False])
def test_600_lowers_flatten_the_bottom(root, upper):
    snaps = OverlaySnapshotter(root / "snapshots")
    lowers = []
    for i in range(600):
        files: dict[str, str | None] = {f"f{i}": str(i), "common": str(i)}
        if i == 5:
            files["dir/old"] = "old"
        if i == 100:  # within the flattened part
            files.update({"f3": None, "dir/new": "new"})
        if i == 101:
            files["dir/.placeholder"] = "p"
        if i == 550:  # within the mounted part: deletes a flattened file
            files["f200"] = None
        lowers.append(snapshot_of(snaps, files))
    # An opaque directory in the flattened part hides the older contents.
    os.setxattr(snaps.fs_path(lowers[100]) / "dir", "trusted.overlay.opaque", b"y")
    with snaps.mount(lowers, snaps.create() if upper else None) as merged:
        assert [n for n in os.listdir(snaps.root) if n.startswith(".flat-")]
        names = set(os.listdir(merged))
        assert names == {f"f{i}" for i in range(600)} - {"f3", "f200"} | {"common", "dir"}
        assert (merged / "common").read_text() == "599"
        assert (merged / "f42").read_text() == "42"
        assert sorted(os.listdir(merged / "dir")) == [".placeholder", "new"]
        if upper:
            (merged / "f10").unlink()
            (merged / "written").write_text("w")


def test_concurrent_mounts_from_threads(root):
    snaps = OverlaySnapshotter(root / "snapshots")
    base = [snapshot_of(snaps, {"base": "b"}), snapshot_of(snaps, {"second": "s"})]
    cwd = os.getcwd()
    errors: list[BaseException] = []
    uppers = [snaps.create() for _ in range(8)]

    def work(index: int) -> None:
        try:
            for round_ in range(5):
                with snaps.mount(base, uppers[index]) as merged:
                    assert (merged / "base").read_text() == "b"
                    (merged / f"t{index}-{round_}").write_text(str(index))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert os.getcwd() == cwd
    for index, upper in enumerate(uppers):
        assert sorted(os.listdir(snaps.fs_path(upper))) == [f"t{index}-{r}" for r in range(5)]


def test_copy_snapshotter_keeps_metadata_and_special_files(root):
    snaps = CopySnapshotter(root / "snapshots")
    base = snaps.create()
    fs = snaps.fs_path(base)
    (fs / "tool").write_text("t")
    os.chown(fs / "tool", 10, 20)
    os.chmod(fs / "tool", 0o4755)
    os.setxattr(fs / "tool", "security.capability", bytes.fromhex("0100000200200000000000000000000000000000"))
    os.symlink("tool", fs / "link")
    os.mkfifo(fs / "fifo")
    upper = snaps.create()
    with snaps.mount([base], upper) as merged:
        st = os.lstat(merged / "tool")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (10, 20, 0o4755)
        assert os.getxattr(merged / "tool", "security.capability")[:4] == b"\x01\x00\x00\x02"
        assert os.readlink(merged / "link") == "tool"
        assert stat.S_ISFIFO(os.lstat(merged / "fifo").st_mode)
        os.chmod(merged / "fifo", 0o600)
    assert sorted(os.listdir(snaps.fs_path(upper))) == ["fifo"]
