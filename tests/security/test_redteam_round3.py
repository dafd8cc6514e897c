"""Red-team round 3: a lazy blob's recipe damaged on disk (ROOT/content/lazy/
<alg>/<hex>, the JSON that says how to make a layer's bytes from a snapshot)
is a Python traceback from `pybuild doctor`, the command meant to report
damage: ContentStore.recipe() json.loads the file unchecked, unlike the
manifests and configs that 6539ceb moved to read_json. An empty or
truncated recipe is what put_lazy leaves after a crash (tmp + rename, no
fsync). Expected: doctor names the damaged blob and exits 1, no traceback.

And: `ADD <url>` without --checksum is keyed on the downloaded bytes only
(builder/ops/source/http.py HttpImpl.cache_key), while the file it puts in
the image also carries the response's Last-Modified as its mtime. When the
server's Last-Modified moves and the bytes stay, a rebuild reuses the old
snapshot (old mtime) where a fresh root gives the new one; BuildKit's http
source keys on the file name, mode and Last-Modified too (formatCacheKey)."""

from __future__ import annotations

import shutil
import http.server
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.pybuild import pybuild_env
from fixtures.servers import LoopbackServer

PYBUILD = [shutil.which("pybuild") or sys.executable, *([] if shutil.which("pybuild") else ["-m", "builder.cli"])]


def _run(env, *args):
    return subprocess.run([*PYBUILD, *args], capture_output=True, timeout=120, env=env)


@pytest.mark.parametrize("damage", [b"", b"garbage{", b'{"kind": "snapshot-tar"'])
def test_doctor_on_a_damaged_lazy_recipe(tmp_path: Path, damage: bytes):
    env = pybuild_env(tmp_path)
    root = tmp_path / "root"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_text("a\n")
    done = _run(env, "build", "--root", str(root), "-q", "-t", "app", str(ctx))
    assert done.returncode == 0, done.stderr
    recipes = list((root / "content" / "lazy" / "sha256").iterdir())
    assert recipes, "the build left no lazy layer"
    for recipe in recipes:
        recipe.write_bytes(damage)

    done = _run(env, "doctor", "--root", str(root))
    out = done.stdout.decode() + done.stderr.decode()
    assert "Traceback" not in out, out
    assert done.returncode == 1, out
    assert any(recipe.name in out for recipe in recipes), out


class _Dated(http.server.BaseHTTPRequestHandler):
    last_modified = "Wed, 21 Oct 2015 07:28:00 GMT"

    def do_GET(self):  # noqa: N802
        body = b"same bytes\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Last-Modified", type(self).last_modified)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_add_url_rebuild_after_last_modified_moved(tmp_path: Path):
    env = pybuild_env(tmp_path)
    ctx = tmp_path / "ctx"
    ctx.mkdir()

    def export(root: Path, dest: Path) -> int:
        done = _run(env, "build", "--root", str(root), "-o", f"type=local,dest={dest}", str(ctx))
        assert done.returncode == 0, done.stderr
        return os.lstat(dest / "d" / "f").st_mtime_ns

    class Dated(_Dated):
        pass

    with LoopbackServer(Dated) as server:
        (ctx / "Dockerfile").write_text(f"FROM scratch\nADD {server.url}/f /d/\n")
        first = export(tmp_path / "root", tmp_path / "out1")
        Dated.last_modified = "Wed, 01 Jan 2020 00:00:00 GMT"
        fresh = export(tmp_path / "fresh-root", tmp_path / "out-fresh")
        rebuilt = export(tmp_path / "root", tmp_path / "out2")
    assert first != fresh  # the server's change does reach a fresh root
    assert rebuilt == fresh, "the rebuild reused the download made under the old Last-Modified"
