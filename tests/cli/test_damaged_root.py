"""A root damaged on disk (an index that is no database, a stored manifest
whose bytes changed) is one clear error and exit 1 from every command that
reads it, never a Python traceback; both were tracebacks before."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cache.digest import Digest
from cache.errors import DigestMismatch, UnreadableDocument
from cache.store import ContentStore
from cli_helpers import Cli, write_context
from fixtures.pybuild import pybuild_env


@pytest.fixture
def built(tmp_path) -> Cli:
    cli = Cli(tmp_path / "root", pybuild_env(tmp_path))
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a /a\n", {"a": "a\n"})
    done = cli.build("build", "-q", "-t", "app", str(ctx))
    assert done.returncode == 0, done.stderr
    cli.context = ctx
    return cli


def _one_error(done, *needles: str) -> None:
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "Traceback" not in err
    assert err.startswith("ERROR: ") and all(n in err for n in needles), err


@pytest.mark.parametrize("command", [["images"], ["du"], ["doctor"], ["inspect", "app"], ["build", "CTX"]])
def test_an_index_that_is_no_database(built, command):
    (built.root / "index.db").write_bytes(os.urandom(8192))
    for name in ("index.db-wal", "index.db-shm"):
        (built.root / name).unlink(missing_ok=True)
    args = [str(built.context) if a == "CTX" else a for a in command]
    _one_error(built.build(*args), "index.db", "is damaged")


def _manifest_blob(cli: Cli) -> Path:
    for path in (cli.root / "content" / "blobs" / "sha256").iterdir():
        if b'"schemaVersion"' in path.read_bytes():
            return path
    raise AssertionError("no manifest in the store")


@pytest.mark.parametrize("command", [["inspect", "app"], ["history", "app"], ["images"], ["tag", "app", "b"]])
def test_a_stored_manifest_changed_on_disk(built, command):
    blob = _manifest_blob(built)
    blob.chmod(0o644)
    blob.write_bytes(b'{"garbage')
    _one_error(built.build(*command), "does not match its digest", blob.name)


def test_a_stored_document_that_is_no_json(tmp_path):
    store = ContentStore(tmp_path / "content")
    digest = store.put_bytes(b'{"garbage')
    assert digest == Digest("sha256", hashlib.sha256(b'{"garbage').hexdigest())
    with pytest.raises(UnreadableDocument, match="not valid JSON"):
        store.read_json(digest)
    other = store.put_bytes(b'{"a": 1}')
    assert store.read_json(other) == {"a": 1}
    store.path(other).chmod(0o644)
    store.path(other).write_bytes(b'{"a": 2}')
    with pytest.raises(DigestMismatch):
        store.read_json(other)
