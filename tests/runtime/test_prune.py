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


def _chain(top, depth: int) -> list[str]:
    """top/d/d/... `depth` levels, made with an fd per step (os.makedirs
    recurses once per level); returns the paths, shallowest first."""
    paths, path = [], str(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            path += "/d"
            paths.append(path)
        os.close(os.open("file", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return paths


def _touch_and_restore(merged_dir: str) -> None:
    """What a RUN's mount stub does: copies the directory up, leaves it as it was."""
    times = os.stat(merged_dir)
    open(os.path.join(merged_dir, "stub"), "w").close()
    os.unlink(os.path.join(merged_dir, "stub"))
    os.utime(merged_dir, ns=(times.st_atime_ns, times.st_mtime_ns))


def test_siblings_of_replaced_directories_are_judged_on_their_own(tmp_path):
    snapshots = OverlaySnapshotter(tmp_path / "snapshots")
    base = snapshots.create()
    for name in ("o1", "o2", "o3", "s1", "s2", "s3"):
        (snapshots.fs_path(base) / name).mkdir()
        (snapshots.fs_path(base) / name / "file").write_text("x")
    upper = snapshots.create()
    with snapshots.mount([base], upper) as merged:
        for name in ("o1", "o2", "o3"):  # replaced: opaque, and holding a new file
            os.system(f"rm -rf {merged}/{name} && mkdir {merged}/{name} && touch {merged}/{name}/new")
        for name in ("s1", "s2", "s3"):
            _touch_and_restore(os.path.join(merged, name))
    fs = snapshots.fs_path(upper)
    assert prune_unchanged_dirs(fs, [snapshots.fs_path(base)]) == 3
    assert sorted(os.listdir(fs)) == ["o1", "o2", "o3"]
    for snapshot in (base, upper):
        snapshots.remove(snapshot)


def test_a_copied_up_chain_deeper_than_the_recursion_limit_goes(tmp_path):
    snapshots = OverlaySnapshotter(tmp_path / "snapshots")
    base = snapshots.create()
    depth = 1200
    _chain(snapshots.fs_path(base), depth)
    upper = snapshots.create()
    with snapshots.mount([base], upper) as merged:
        chain = [os.path.join(merged, *["d"] * level) for level in range(1, depth + 1)]
        before = [os.stat(path) for path in chain]
        _touch_and_restore(chain[-1])
        for path, st in reversed(list(zip(chain, before))):
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    fs = snapshots.fs_path(upper)
    assert prune_unchanged_dirs(fs, [snapshots.fs_path(base)]) == depth
    assert os.listdir(fs) == []
    for snapshot in (base, upper):
        snapshots.remove(snapshot)
