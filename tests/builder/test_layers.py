"""LayerMaker: one streaming pass through a helper thread gives the same
blob and diff_id as write_layer alone; a failure stops the thread and
leaves no temp file. An uncompressed layer is lazy: a recipe until read,
then the verified bytes of its snapshot's tar."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading

import pytest

from builder.export.compression import Compression
from builder.export.layers import EarlyLayers, LayerMaker, SnapshotTars
from cache.errors import BlobNotFound, DigestMismatch
from cache.index import Index
from cache.store import ContentStore
from runtime import layer as layer_tar
from runtime.layer import UnportableSnapshot
from runtime.snapshot import OverlaySnapshotter


@pytest.fixture
def maker(tmp_path):
    snaps = OverlaySnapshotter(tmp_path / "snapshots")
    index = Index(tmp_path / "index.db")
    yield LayerMaker(ContentStore(tmp_path / "content", SnapshotTars(tmp_path, snaps)), index, snaps), snaps
    index.close()


def _fill(fs):
    (fs / "d").mkdir()
    (fs / "d/small").write_bytes(b"s" * 100)
    (fs / "d/large").write_bytes(os.urandom(3 << 20))  # several chunks
    os.symlink("small", fs / "d/link")


def _plain_tar(fs) -> bytes:
    plain = io.BytesIO()
    layer_tar.write_layer(fs, plain)
    return plain.getvalue()


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compression", [Compression.UNCOMPRESSED, Compression.GZIP])
def test_blob_and_diff_id_match_a_plain_write(maker, compression):
    layers, snaps = maker
    snapshot = snaps.create()
    _fill(snaps.fs_path(snapshot))
    plain = _plain_tar(snaps.fs_path(snapshot))
    record = layers.layer_for(snapshot, compression)
    assert str(record.diff_id) == _digest_of(plain)
    blob = layers._store.read_bytes(record.digest)
    assert (gzip.decompress(blob) if compression is Compression.GZIP else blob) == plain


def test_a_failed_layer_stops_its_thread_and_leaves_nothing(maker, tmp_path):
    layers, snaps = maker
    snapshot = snaps.create()
    _fill(snaps.fs_path(snapshot))
    os.setxattr(snaps.fs_path(snapshot) / "d/small", "trusted.overlay.metacopy", b"")
    with pytest.raises(UnportableSnapshot):
        layers.layer_for(snapshot, Compression.UNCOMPRESSED)
    assert not [t for t in threading.enumerate() if t.name == "pybuild-layer"]
    assert os.listdir(tmp_path / "content/ingest") == []


def _lazy_layer(maker):
    layers, snaps = maker
    snapshot = snaps.create()
    _fill(snaps.fs_path(snapshot))
    return layers._store, snaps, snapshot, layers.layer_for(snapshot, Compression.UNCOMPRESSED)


def test_an_uncompressed_layer_is_written_only_when_read(maker):
    store, snaps, snapshot, record = _lazy_layer(maker)
    assert store.is_lazy(record.digest) and store.has(record.digest)
    assert not store.path(record.digest).exists() and list(store.digests()) == []
    assert list(store.lazy_digests()) == [record.digest] and store.verify(record.digest)
    assert store.size(record.digest) == record.size
    assert maker[0].layer_for(snapshot, Compression.UNCOMPRESSED) == record  # still known, not re-hashed

    assert store.read_bytes(record.digest) == _plain_tar(snaps.fs_path(snapshot))
    assert not store.is_lazy(record.digest) and list(store.lazy_digests()) == []
    assert store.path(record.digest).stat().st_size == record.size


def test_a_snapshot_that_changed_or_went_is_never_served_as_the_blob(maker, tmp_path):
    store, snaps, snapshot, record = _lazy_layer(maker)
    (snaps.fs_path(snapshot) / "d/small").write_bytes(b"S" * 100)  # same size, other bytes
    with pytest.raises(DigestMismatch):
        store.open(record.digest)
    assert store.is_lazy(record.digest) and os.listdir(tmp_path / "content/ingest") == []
    snaps.remove(snapshot)
    assert not store.verify(record.digest)
    with pytest.raises(BlobNotFound):
        store.open(record.digest)
    assert os.listdir(tmp_path / "content/ingest") == []


def test_a_layer_made_ahead_is_the_one_the_export_gets(maker):
    layers, snaps = maker
    target, other = snaps.create(), snaps.create()
    _fill(snaps.fs_path(target))
    _fill(snaps.fs_path(other))
    early = EarlyLayers(layers, lineage={"copy"})
    try:
        early.step_done("copy", (target,))
        early.step_done("builder-stage", (other,))  # not the target's: never exported
        record = layers.layer_for(target, Compression.UNCOMPRESSED)  # waits for the helper
    finally:
        early.close()
    assert str(record.digest) == _digest_of(_plain_tar(snaps.fs_path(target)))
    assert layers._index.layers_of(other) == []
    assert not [t for t in threading.enumerate() if t.name.startswith(("pybuild-early", "pybuild-layer"))]


def test_closing_ends_the_helper_and_the_export_still_makes_the_layer(maker, tmp_path):
    # Whether close() caught the layer mid-way is timing; what must hold is
    # that the thread is gone and the export gets the right layer either way.
    layers, snaps = maker
    snapshot = snaps.create()
    for i in range(64):
        (snaps.fs_path(snapshot) / f"f{i}").write_bytes(os.urandom(1 << 20))
    early = EarlyLayers(layers, lineage={"run"})
    early.step_done("run", (snapshot,))
    early.close()  # a failed build: whatever was started stops, the thread ends
    assert not [t for t in threading.enumerate() if t.name.startswith(("pybuild-early", "pybuild-layer"))]
    record = layers.layer_for(snapshot, Compression.UNCOMPRESSED)
    assert str(record.digest) == _digest_of(_plain_tar(snaps.fs_path(snapshot)))
    assert os.listdir(tmp_path / "content/ingest") == []
