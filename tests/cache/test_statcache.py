"""The stat cache: hits on an unchanged stat, re-reads on any change, persists."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from cache.digest import Digest
from cache.statcache import StatCache


def sha(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


@pytest.fixture
def cache(tmp_path):
    # racy_window_ns=0: files written by the test a moment ago may be cached
    c = StatCache(tmp_path / "index.db", racy_window_ns=0)
    yield c
    c.close()


def test_digest_then_hit_without_reading(cache, tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    st = os.lstat(f)
    assert cache.file_digest(f, st) == sha(b"hello")
    assert (cache.hashed, cache.hits) == (1, 0)
    assert cache.file_digest(f, st) == sha(b"hello")
    assert (cache.hashed, cache.hits) == (1, 1)


def test_any_stat_change_rehashes(cache, tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    cache.file_digest(f, os.lstat(f))
    f.write_bytes(b"world")  # same size, new mtime/ctime
    assert cache.file_digest(f, os.lstat(f)) == sha(b"world")
    assert cache.hashed == 2


def test_restored_mtime_still_rehashes_because_of_ctime(cache, tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    before = os.lstat(f)
    cache.file_digest(f, before)
    f.write_bytes(b"jello")
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))  # `touch -r`: ctime still moves
    assert cache.file_digest(f, os.lstat(f)) == sha(b"jello")


def test_racy_window_keeps_fresh_files_out(tmp_path):
    cache = StatCache(tmp_path / "index.db")  # default window: 1 s
    f = tmp_path / "fresh.txt"
    f.write_bytes(b"x")
    st = os.lstat(f)
    cache.file_digest(f, st)
    cache.file_digest(f, st)
    assert cache.hashed == 2 and cache.hits == 0
    cache.close()


def test_batch_writes_once_and_persists_across_instances(tmp_path):
    db = tmp_path / "index.db"
    files = []
    for i in range(5):
        f = tmp_path / f"f{i}"
        f.write_bytes(b"%d" % i)
        files.append(f)
    first = StatCache(db, racy_window_ns=0)
    with first.batch():
        for f in files:
            first.file_digest(f, os.lstat(f))
        # nothing committed yet: another connection sees no rows
        with sqlite3.connect(db) as other:
            assert other.execute("SELECT count(*) FROM stat_cache").fetchone()[0] == 0
    first.close()
    second = StatCache(db, racy_window_ns=0)
    for f in files:
        second.file_digest(f, os.lstat(f))
    assert (second.hashed, second.hits) == (0, 5)
    second.close()


def test_threads_share_one_cache(cache, tmp_path):
    files = []
    for i in range(20):
        f = tmp_path / f"t{i}"
        f.write_bytes(os.urandom(100))
        files.append(f)
    errors = []

    def work():
        try:
            with cache.batch():
                for f in files:
                    assert cache.file_digest(f, os.lstat(f)) == sha(f.read_bytes())
        except AssertionError as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.hashed + cache.hits == 80


def test_concurrent_process_writes(tmp_path):
    db = tmp_path / "index.db"
    f = tmp_path / "shared.txt"
    f.write_bytes(b"shared")
    script = (
        "import os, sys; from pathlib import Path; from cache.statcache import StatCache\n"
        "c = StatCache(Path(sys.argv[1]), racy_window_ns=0)\n"
        "for _ in range(50):\n"
        "    with c.batch(): c.file_digest(Path(sys.argv[2]), os.lstat(sys.argv[2]))\n"
        "    c.forget(Path(sys.argv[2]))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), str(f)]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]


def test_forget_prefix(cache, tmp_path):
    (tmp_path / "d").mkdir()
    inside, outside = tmp_path / "d" / "x", tmp_path / "dx"
    for f in (inside, outside):
        f.write_bytes(b"1")
        cache.file_digest(f, os.lstat(f))
    assert cache.forget(tmp_path / "d") == 1
    assert cache.lookup(inside, os.lstat(inside)) is None
    assert cache.lookup(outside, os.lstat(outside)) is not None
