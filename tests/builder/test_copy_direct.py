"""COPY written straight into a snapshot's upper directory (plan_direct) and
linked from a previous result (CopyReuse), on real overlay snapshots: the
snapshot must hold what a copy through the mounted view leaves."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

import pytest

from builder.context.trees import BuildContext
from builder.ops.copy import copy_into, plan_direct
from builder.ops.copy_options import CopyError
from builder.ops.copy_reuse import CopyReuse, note_name
from cache.statcache import StatCache
from runtime import layer as layer_tar
from runtime.fsutil import remove_tree
from runtime.snapshot import CopySnapshotter, OverlaySnapshotter

T_FILE = 1_600_000_000_000_000_000
CLAMP = 1_700_000_000  # directories made now are clamped; context files are older


@pytest.fixture(params=["overlay", "copy"])
def snaps(request):
    path = Path(tempfile.mkdtemp(prefix="pybuild-direct-"))
    kind = OverlaySnapshotter if request.param == "overlay" else CopySnapshotter
    yield kind(path / "snapshots")
    with open("/proc/self/mountinfo") as handle:
        assert not [line for line in handle if str(path) in line], "a mount was left behind"
    remove_tree(path)


@pytest.fixture
def base(snaps):
    """A lower snapshot: /etc/passwd, an empty /empty, a non-empty /full, a
    file /file, a symlink /link -> /empty."""
    snapshot = snaps.create()
    fs = snaps.fs_path(snapshot)
    (fs / "etc").mkdir()
    (fs / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (fs / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    (fs / "empty").mkdir(mode=0o711)
    os.chown(fs / "empty", 7, 8)
    (fs / "full").mkdir()
    (fs / "full/old").write_text("old")
    (fs / "file").write_text("x")
    os.symlink("/empty", fs / "link")
    snaps.commit(snapshot)
    return snapshot


@pytest.fixture
def ctx(tmp_path):
    root = tmp_path / "ctx"
    for rel, data in {"a.txt": "a", "d/b.txt": "bb", "d/e/c.sh": "#!/bin/sh\n", "d/big": "z" * 200_000}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(data)
    os.chmod(root / "d/e/c.sh", 0o755)
    os.symlink("b.txt", root / "d/ln")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(T_FILE, T_FILE), follow_symlinks=False)
    return root


class _Sha:
    def __init__(self):
        self.h = hashlib.sha256()

    def write(self, data):
        self.h.update(data)
        return len(data)

    def flush(self):
        pass


def _layer_digest(snaps, snapshot) -> str:
    sink = _Sha()
    layer_tar.write_layer(snaps.fs_path(snapshot), sink, clamp_mtime=CLAMP)
    return sink.h.hexdigest()


def _copy(snaps, base, selection, dest, *, direct: bool, reuse=None, **kw):
    """(the new snapshot, whether the direct path was taken)."""
    snapshot = snaps.create()
    with snaps.mount([base], snapshot) as rootfs:
        plan = plan_direct(rootfs, selection, dest, **kw) if direct else None
        if plan is None:
            copy_into(rootfs, selection, dest, **kw)
    if plan is not None:
        plan.run(snaps.fs_path(snapshot), selection, reuse)
    snaps.commit(snapshot)
    return snapshot, plan is not None


@pytest.mark.parametrize("sources, dest, kw, takes_direct", [
    (["."], "/app", {}, True),
    (["d"], "/empty", {}, True),  # an empty lower directory: copied up first
    (["d/"], "/link/", {}, True),  # through a symlink in the lower
    (["d"], "/new/deep/dir/", {"chown": "app", "chmod": "0750"}, True),
    (["a.txt", "d"], "/multi/", {"chmod": "u+x,go-w"}, True),
    (["d"], "/full", {}, False),  # lower entries to merge with
    (["a.txt"], "/named.txt", {}, False),
    (["a.txt"], "/", {}, False),
])
def test_direct_equals_through_the_mount(snaps, base, ctx, sources, dest, kw, takes_direct):
    selection = BuildContext(ctx).select(sources)
    mounted, _ = _copy(snaps, base, selection, dest, direct=False, **kw)
    direct, took = _copy(snaps, base, selection, dest, direct=True, **kw)
    assert took is takes_direct
    assert _layer_digest(snaps, direct) == _layer_digest(snaps, mounted)


def test_copied_up_empty_dir_keeps_its_lower_metadata_and_no_probe(snaps, base, ctx):
    selection = BuildContext(ctx).select(["d"])
    snapshot, took = _copy(snaps, base, selection, "/empty", direct=True)
    assert took
    upper = snaps.fs_path(snapshot) / "empty"
    st = os.lstat(upper)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o711, 7, 8)
    assert sorted(os.listdir(upper)) == ["b.txt", "big", "e", "ln"]  # no probe, no whiteout


def test_errors_are_the_ones_copy_into_gives(snaps, base, ctx):
    selection = BuildContext(ctx).select(["a.txt", "d"])
    snapshot = snaps.create()
    with snaps.mount([base], snapshot) as rootfs:
        assert plan_direct(rootfs, selection, "/x") is None  # a file to a name: through the view
        with pytest.raises(CopyError, match="not a directory"):
            plan_direct(rootfs, selection, "/file/sub/")


def _copy_reusing(snaps, base, selection, dest, stats) -> tuple[str, CopyReuse]:
    """What CopyImpl does for a context source."""
    reuse = CopyReuse(snaps, note_name({"op": "test"}, (base,)), stats)
    snapshot = snaps.create()
    with snaps.mount([base], snapshot) as rootfs:
        plan = plan_direct(rootfs, selection, dest)
    reuse.start(plan.dest_rel)
    plan.run(snaps.fs_path(snapshot), selection, reuse)
    reuse.save(snapshot, plan.dest_rel)
    snaps.commit(snapshot)
    return snapshot, reuse


def _hashed_selection(context):
    """The whole context, selected and hashed as a COPY's key would (which
    fills the stat cache that reuse reads)."""
    selection = context.select(["."])
    context.checksum(selection)
    return selection


def test_reuse_links_unchanged_files_and_copies_the_rest(snaps, base, ctx, tmp_path):
    stats = StatCache(tmp_path / "index.db", racy_window_ns=0)
    try:
        context = BuildContext(ctx, stat_cache=stats)
        selection = _hashed_selection(context)
        first, first_reuse = _copy_reusing(snaps, base, selection, "/app", stats)
        assert first_reuse.linked_count == 0  # no previous result

        (ctx / "a.txt").write_text("A!")
        os.utime(ctx / "a.txt", ns=(T_FILE, T_FILE))
        os.chmod(ctx / "d/b.txt", 0o600)
        os.unlink(ctx / "d/e/c.sh")
        selection = _hashed_selection(context)
        second, reuse = _copy_reusing(snaps, base, selection, "/app", stats)
    finally:
        stats.close()
    old, new = snaps.fs_path(first) / "app", snaps.fs_path(second) / "app"
    assert os.lstat(new / "d/big").st_ino == os.lstat(old / "d/big").st_ino
    assert os.lstat(new / "a.txt").st_ino != os.lstat(old / "a.txt").st_ino
    assert (new / "a.txt").read_text() == "A!"
    assert stat.S_IMODE(os.lstat(new / "d/b.txt").st_mode) == 0o600
    assert not (new / "d/e/c.sh").exists()
    assert reuse.linked_count == 1  # d/big; the symlink is made anew

    # Exactly the snapshot a copy without reuse makes.
    fresh, _ = _copy(snaps, base, selection, "/app", direct=False)
    assert _layer_digest(snaps, second) == _layer_digest(snaps, fresh)


def test_a_changed_previous_inode_is_not_linked(snaps, base, ctx, tmp_path):
    """The inode's own metadata is checked, not only the note: a previous
    file that is not what the copy would make is never shared."""
    stats = StatCache(tmp_path / "index.db", racy_window_ns=0)
    try:
        context = BuildContext(ctx, stat_cache=stats)
        selection = _hashed_selection(context)
        first, _ = _copy_reusing(snaps, base, selection, "/app", stats)
        os.utime(snaps.fs_path(first) / "app/d/big", ns=(T_FILE + 1, T_FILE + 1))
        second, reuse = _copy_reusing(snaps, base, selection, "/app", stats)
    finally:
        stats.close()
    assert reuse.linked_count == 3  # a.txt, d/b.txt and d/e/c.sh, but not d/big
    new = snaps.fs_path(second) / "app/d/big"
    assert os.lstat(new).st_ino != os.lstat(snaps.fs_path(first) / "app/d/big").st_ino
    assert os.lstat(new).st_mtime_ns == T_FILE


def test_a_context_file_with_xattrs_is_linked_as_any_other(snaps, base, ctx, tmp_path):
    """COPY from the context writes no xattr (docker's transfer drops them),
    so a source's xattrs say nothing about the previous result's inode: it
    is linked, and still carries none."""
    os.setxattr(ctx / "d/big", "user.note", b"n")
    stats = StatCache(tmp_path / "index.db", racy_window_ns=0)
    try:
        context = BuildContext(ctx, stat_cache=stats)
        selection = _hashed_selection(context)
        first, _ = _copy_reusing(snaps, base, selection, "/app", stats)
        second, reuse = _copy_reusing(snaps, base, selection, "/app", stats)
    finally:
        stats.close()
    assert reuse.linked_count == 4  # a.txt, d/b.txt, d/e/c.sh and d/big
    new = snaps.fs_path(second) / "app/d/big"
    assert os.lstat(new).st_ino == os.lstat(snaps.fs_path(first) / "app/d/big").st_ino
    assert os.listxattr(new) == []
    fresh, _ = _copy(snaps, base, selection, "/app", direct=False)
    assert _layer_digest(snaps, second) == _layer_digest(snaps, fresh)
