"""StatCache.known_digest: only digests this process holds for exactly
this stat, never racy ones, and no file read."""

from __future__ import annotations

import hashlib
import os

from cache.statcache import StatCache


def test_known_only_after_hashing_and_for_the_same_stat(tmp_path):
    cache = StatCache(tmp_path / "index.db", racy_window_ns=0)
    try:
        f = tmp_path / "a"
        f.write_bytes(b"one")
        st = os.lstat(f)
        assert cache.known_digest(f, st) is None
        digest = cache.file_digest(f, st)
        assert digest.hex == hashlib.sha256(b"one").hexdigest()
        assert cache.known_digest(f, st) == digest
        f.write_bytes(b"two")
        assert cache.known_digest(f, os.lstat(f)) is None
    finally:
        cache.close()


def test_racy_digests_are_not_known(tmp_path):
    cache = StatCache(tmp_path / "index.db")  # the default one-second window
    try:
        f = tmp_path / "a"
        f.write_bytes(b"fresh")
        st = os.lstat(f)
        cache.file_digest(f, st)
        assert cache.known_digest(f, st) is None
    finally:
        cache.close()
