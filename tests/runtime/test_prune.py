import os

from runtime.prune import prune_unchanged_dirs
from runtime.snapshot import OverlaySnapshotter


def test_only_untouched_copied_up_directories_go(tmp_path):
    snapshots = OverlaySnapshotter(tmp_path / "snapshots")
    base = snapshots.create()
    for name in ("etc", "keep-mode", "opaque", "deep/er"):
        (snapshots.fs_path(base) / name).mkdir(parents=True)
        (snapshots.fs_path(base) / name / "file").write_text("x")
    upper = snapshots.create()
    with snapshots.mount([base], upper) as merged:
        etc = os.path.join(merged, "etc")
        times = os.stat(etc)
        open(os.path.join(etc, "stub"), "w").close()
        os.unlink(os.path.join(etc, "stub"))
        os.utime(etc, ns=(times.st_atime_ns, times.st_mtime_ns))
        deeper = os.path.join(merged, "deep", "er")
        t_deep, t_er = os.stat(os.path.join(merged, "deep")), os.stat(deeper)
        open(os.path.join(deeper, "stub"), "w").close()
        os.unlink(os.path.join(deeper, "stub"))
        os.utime(deeper, ns=(t_er.st_atime_ns, t_er.st_mtime_ns))
        os.utime(os.path.join(merged, "deep"), ns=(t_deep.st_atime_ns, t_deep.st_mtime_ns))
        os.chmod(os.path.join(merged, "keep-mode"), 0o700)
        os.system(f"rm -rf {merged}/opaque && mkdir {merged}/opaque")
    fs = snapshots.fs_path(upper)
    assert {"etc", "keep-mode", "opaque", "deep"} <= set(os.listdir(fs))
    assert prune_unchanged_dirs(fs, [snapshots.fs_path(base)]) == 3  # etc, deep/er, deep
    assert sorted(os.listdir(fs)) == ["keep-mode", "opaque"]
    for snapshot in (base, upper):
        snapshots.remove(snapshot)
