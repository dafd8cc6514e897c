"""Issue 5: `pybuild du` / `prune` and the automatic GC, on real roots."""

from __future__ import annotations

import os
from contextlib import contextmanager

from builder.export.assemble import load_image
from builder.build import build
from builder.root.gc import disk_usage, parse_duration, parse_size, prune
from builder.root.lock import RootLock
from builder.root.worker import Worker
from e2e.cache_helpers import Recorder
from e2e.helpers import write_context

DOCKERFILE = ("FROM {base}\nCOPY a.txt /\n"
              "RUN --mount=type=cache,target=/c echo x >> /c/log && echo built > /built\n")


def _build(context, root, base, **kwargs) -> Recorder:
    recorder = Recorder()
    build(context, dockerfile_text=DOCKERFILE.format(base=base), root=root, reporter=recorder, **kwargs)
    return recorder


def _image_blobs_present(worker, name: str) -> bool:
    image = load_image(worker.store, worker.index.get_image(name))
    return all(worker.store.has(d.digest) for d in (image.manifest, image.config, *image.layers))


@contextmanager
def _tagged_build(busybox_image, tmp_path, tag: str):
    """Build DOCKERFILE as `tag`; yields (context, root, worker, image)."""
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    _build(context, root, busybox_image.ref, tags=[tag])
    worker = Worker.open(root)
    try:
        yield context, root, worker, load_image(worker.store, worker.index.get_image(f"docker.io/library/{tag}"))
    finally:
        worker.close()


def test_du_and_prune_all_keep_named_images(busybox_image, tmp_path):
    with _tagged_build(busybox_image, tmp_path, "kept:1") as (context, root, worker, image):
        usage = disk_usage(worker)
        assert usage.base_layers[0] == 1 and usage.build_cache[0] == 2 and usage.cache_mounts[0] == 1
        # Manifest, config and the base layer; the COPY and RUN layers are
        # lazy (recipes naming their snapshots: no bytes of their own yet).
        assert usage.image_blobs[0] == 3
        new_layers = [d.digest for d in image.layers if worker.store.is_lazy(d.digest)]
        assert len(new_layers) == 2
        # A plain prune keeps everything the cache still refers to.
        done = prune(worker)
        assert done.snapshots == 0 and done.results == 0
        # While a build holds the root, a non-blocking prune stays out.
        with RootLock(root, exclusive=False):
            assert prune(worker, all=True, blocking=False) is None
        done = prune(worker, all=True)
        assert done.snapshots == 3 and done.cache_mounts == 1 and done.freed > 0
        assert worker.snapshots.ids() == []
        assert _image_blobs_present(worker, "docker.io/library/kept:1")
        # Their snapshots are gone, so their bytes were written out first.
        assert not any(worker.store.is_lazy(d) for d in new_layers)
        assert all(worker.store.verify(d) for d in new_layers)
    # The build cache is gone: the steps run again.
    assert len(_build(context, root, busybox_image.ref).runs) == 2


def test_keep_storage_and_until(busybox_image, tmp_path):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    _build(context, root, busybox_image.ref)
    worker = Worker.open(root)
    try:
        assert prune(worker, until=parse_duration("1h")).results == 0  # all used just now
        assert prune(worker, keep_storage=parse_size("1GB")).results == 0
        done = prune(worker, keep_storage=0)
        assert done.results >= 3 and worker.snapshots.ids() == []
    finally:
        worker.close()


def test_automatic_gc_after_a_build(busybox_image, tmp_path, monkeypatch):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    monkeypatch.setenv("PYBUILD_GC_KEEP_STORAGE", "1KB")
    recorder = _build(context, root, busybox_image.ref, tags=["auto:1"])
    assert any(m.startswith("garbage collection: freed") for m in recorder.messages)
    worker = Worker.open(root)
    try:
        assert worker.snapshots.ids() == []
        assert _image_blobs_present(worker, "docker.io/library/auto:1")
    finally:
        worker.close()


def _collected(recorder) -> bool:
    return any(m.startswith("garbage collection: freed") for m in recorder.messages)


def test_automatic_gc_follows_the_config_policies_at_most_once_a_minute(busybox_image, tmp_path, monkeypatch):
    from builder.config import GCPolicy
    from builder.root.gc import GC_INTERVAL_S

    monkeypatch.delenv("PYBUILD_GC_KEEP_STORAGE", raising=False)
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    tiny = (GCPolicy(keep_storage=1024, filters=("type==exec.cachemount",)), GCPolicy(keep_storage=1024))
    assert _collected(_build(context, root, busybox_image.ref, tags=["auto:2"], gc_policy=tiny))
    # Measuring a root walks it: the next build within the interval does not.
    again = _build(context, root, busybox_image.ref, gc_policy=tiny)
    assert len(again.runs) == 2 and not _collected(again)
    stamp = root / "gc.checked"
    os.utime(stamp, (stamp.stat().st_atime, stamp.stat().st_mtime - GC_INTERVAL_S - 1))
    assert _collected(_build(context, root, busybox_image.ref, gc_policy=tiny))
    # Only the type-filtered policy: pybuild has no record types, it is not applied.
    os.utime(stamp, (stamp.stat().st_atime, stamp.stat().st_mtime - GC_INTERVAL_S - 1))
    kept = _build(context, root, busybox_image.ref, gc_policy=tiny[:1])
    assert not _collected(kept)


def test_automatic_gc_by_age_and_by_default(busybox_image, tmp_path, monkeypatch):
    from builder.config import GCPolicy
    from builder.root.gc import DEFAULT_SHARE, Rule, gc_rules

    monkeypatch.delenv("PYBUILD_GC_KEEP_STORAGE", raising=False)
    st = os.statvfs(tmp_path)
    assert gc_rules(tmp_path) == (Rule(keep_storage=int(st.f_blocks * st.f_frsize * DEFAULT_SHARE)),)
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    assert not _collected(_build(context, root, busybox_image.ref))  # far below a tenth of the disk
    (root / "gc.checked").unlink()
    assert _collected(_build(context, root, busybox_image.ref, gc_policy=(GCPolicy(keep_duration=0.0),)))


def test_prune_cli_rejects_bad_options(tmp_path):
    import subprocess

    done = subprocess.run(["pybuild", "prune", "--root", str(tmp_path / "r"), "--keep-storage", "lots"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "invalid size 'lots'" in done.stderr
    done = subprocess.run(["pybuild", "du", "--root", str(tmp_path / "r")], capture_output=True, text=True)
    assert done.returncode == 0 and "build cache" in done.stdout


def test_prune_waits_for_a_running_build(busybox_image, tmp_path):
    import threading
    import time

    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    started = tmp_path / "started"
    # The RUN's output tells us the build is under way (and holds the root).
    recorder = Recorder()
    original = recorder.output
    recorder.output = lambda vertex, data: (started.touch(), original(vertex, data))
    dockerfile = f"FROM {busybox_image.ref}\nRUN echo go && sleep 2 && echo done > /done\n"
    thread = threading.Thread(target=build, args=(context,),
                              kwargs=dict(dockerfile_text=dockerfile, root=root, reporter=recorder))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        worker = Worker.open(root)
        try:
            assert prune(worker, all=True, blocking=False) is None  # a build holds the root
            done = prune(worker, all=True)  # waits for the build, then collects
            assert not thread.is_alive() and done.snapshots >= 2
        finally:
            worker.close()
    finally:
        thread.join()


def test_a_lazy_layer_shared_by_two_snapshots_outlives_either(tmp_path):
    """Identical steps give identical tars: one lazy blob, two snapshots.
    Removing the one its recipe names points the recipe at the other."""
    from builder.export.compression import Compression
    from builder.root.gc import before_removing_snapshots
    from builder.export.layers import LayerMaker

    worker = Worker.open(tmp_path / "root")
    try:
        layers = LayerMaker(worker.store, worker.index, worker.snapshots)
        first, second = worker.snapshots.create(), worker.snapshots.create()
        for snapshot in (first, second):
            (worker.snapshots.fs_path(snapshot) / "same.txt").write_text("same bytes\n")
            os.utime(worker.snapshots.fs_path(snapshot) / "same.txt", (1_000_000, 1_000_000))
            os.utime(worker.snapshots.fs_path(snapshot), (1_000_000, 1_000_000))
        digest = layers.layer_for(first, Compression.UNCOMPRESSED).digest
        assert layers.layer_for(second, Compression.UNCOMPRESSED).digest == digest
        assert worker.store.recipe(digest)["snapshot"] == second  # the latest hash wins the recipe
        before_removing_snapshots(worker, {second})
        worker.snapshots.remove(second)
        assert worker.store.is_lazy(digest) and worker.store.recipe(digest)["snapshot"] == first
        with worker.store.open(digest) as blob:
            assert b"same bytes" in blob.read()
    finally:
        worker.close()


def test_doctor_finds_an_image_whose_lazy_layer_lost_its_snapshot(busybox_image, tmp_path):
    from builder.root.doctor import Kind, check

    with _tagged_build(busybox_image, tmp_path, "fragile:1") as (_, _, worker, image):
        assert check(worker) == []
        lazy = [d.digest for d in image.layers if worker.store.is_lazy(d.digest)]
        worker.snapshots.remove(worker.store.recipe(lazy[-1])["snapshot"])  # lost behind pybuild's back
        kinds = {problem.kind for problem in check(worker)}
        assert {Kind.CORRUPT_BLOB, Kind.BROKEN_IMAGE, Kind.MISSING_SNAPSHOT} <= kinds
        check(worker, fix=True)
        assert check(worker) == [] and worker.index.get_image("docker.io/library/fragile:1") is None


def test_automatic_gc_skips_the_walk_when_the_whole_disk_fits_the_limit(busybox_image, tmp_path, monkeypatch):
    from builder.root import gc

    walks = []
    real = gc.disk_usage
    monkeypatch.setattr(gc, "disk_usage", lambda worker: walks.append(worker.root) or real(worker))
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    st = os.statvfs(tmp_path)
    disk = st.f_blocks * st.f_frsize
    monkeypatch.setenv("PYBUILD_GC_KEEP_STORAGE", str(disk))  # the root can't hold more than its disk
    assert not _collected(_build(context, root, busybox_image.ref))
    assert walks == []
    monkeypatch.setenv("PYBUILD_GC_KEEP_STORAGE", "1KB")  # the disk holds more: walk, then collect
    assert _collected(_build(context, root, busybox_image.ref))
    assert walks == [root]
