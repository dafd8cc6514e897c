import os

import pytest

from cache.digest import Digest
from cache.errors import DigestMismatch, InvalidDigest, SizeMismatch
from cache.index import Index, LayerRecord
from cache.keys import chain_id
from cache.store import ContentStore


def test_digest_parse_and_format():
    d = Digest.of_bytes(b"hello")
    assert Digest.parse(str(d)) == d
    for bad in ["", "sha256:", "sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64]:
        with pytest.raises(InvalidDigest):
            Digest.parse(bad)


def test_put_is_atomic_and_verified(tmp_path):
    store = ContentStore(tmp_path)
    d = store.put_bytes(b"data")
    assert store.read_bytes(d) == b"data"
    wrong = Digest.of_bytes(b"other")
    with pytest.raises(DigestMismatch):
        store.put_bytes(b"data!", expected=wrong)
    assert not store.has(wrong)
    with pytest.raises(SizeMismatch):
        with store.writer(size=3) as w:
            w.write(b"four")
            w.commit()
    # Nothing half-written is left in the ingest directory.
    assert os.listdir(store.tmp_dir) == []


def test_abandoned_writer_leaves_nothing(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with store.writer() as w:
            w.write(b"partial")
            raise KeyboardInterrupt
    assert os.listdir(store.tmp_dir) == []
    assert list(store.digests()) == []


def test_index_results_first_writer_wins(tmp_path):
    index = Index(tmp_path / "index.db")
    first = index.put_result("k", ("s1",))
    second = Index(tmp_path / "index.db").put_result("k", ("s2",))
    assert first.chain == ("s1",) and second.chain == ("s1",)


def test_index_layers_and_images_survive_reopen(tmp_path):
    index = Index(tmp_path / "index.db")
    d = Digest.of_bytes(b"x")
    index.put_layer(LayerRecord("snap", "gzip", d, d, 1, "m", False))
    index.put_image("docker.io/library/app:latest", d)
    index.close()
    again = Index(tmp_path / "index.db")
    assert again.get_layer("snap", "gzip").digest == d
    assert again.get_image("docker.io/library/app:latest") == d


def test_chain_id_matches_the_oci_definition():
    import hashlib

    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_id([a]) == a
    assert chain_id([a, b]) == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
