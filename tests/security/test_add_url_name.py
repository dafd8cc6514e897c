"""`ADD <url>`: the downloaded file's name is one plain name inside the
new snapshot, whatever the URL's path or the server's Content-Disposition.

A hostile server on loopback answers every path with the same body and a
Content-Disposition climbing out; the test then checks where the body
landed: in the image, and in no snapshot directory beside its `fs/`.
"""

from __future__ import annotations

import http.server
from pathlib import Path

import pytest

from builder.ops.source.http import _filename_from
from e2e.helpers import build_image
from fixtures.servers import LoopbackServer
from frontend.copy_instruction import url_file_name as _url_file_name

BODY = b"hostile-download-body\n"


class _Hostile(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Content-Disposition", 'attachment; filename="../../x"')
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_server():
    with LoopbackServer(_Hostile) as server:
        yield server.url


def _files_holding(top: Path, data: bytes) -> list[Path]:
    return [p for p in top.rglob("*") if p.is_file() and not p.is_symlink() and p.read_bytes() == data]


@pytest.mark.parametrize("path, name", [
    ("/a/..", "__unnamed__"),
    ("/a/%2e%2e", "__unnamed__"),
    ("/a/..%2F..%2Fx", "x"),
    ("/sub/", "sub"),
    ("/file.txt", "file.txt"),
])
def test_add_url_writes_one_plain_name_inside_the_snapshot(tmp_path, busybox_image, hostile_server, path, name):
    root = tmp_path / "root"
    built = build_image(tmp_path, root, f"FROM {busybox_image.ref}\nADD {hostile_server}{path} /dl/\n")
    snapshots = root / "snapshots"
    for holder in _files_holding(snapshots, BODY):
        # every copy of the download lies inside some snapshot's fs/
        rel = holder.relative_to(snapshots).parts
        assert len(rel) >= 3 and rel[1] == "fs", f"download written outside a snapshot's fs/: {holder}"
    assert not (tmp_path / "x").exists() and not (root / "x").exists()
    assert built.read_text(f"/dl/{name}") == BODY.decode()


@pytest.mark.parametrize("url, name", [
    ("http://h/a/..", "__unnamed__"),
    ("http://h/a/../", "__unnamed__"),
    ("http://h", "__unnamed__"),
    ("http://h/", "__unnamed__"),
    ("http://h/a%zz", "__unnamed__"),  # Go's url.Parse refuses it
    ("http://h/a%00b", "__unnamed__"),
    ("http://h/dir/", "dir"),  # Go's path.Base drops trailing slashes
    ("http://h/a%20b.txt?x=1#frag", "a b.txt"),  # the decoded path, as url.URL.Path
])
def test_the_frontend_names_a_url_as_buildkit_or_unnamed(url, name):
    assert _url_file_name(url) == name


def test_a_content_disposition_name_is_its_base_name():
    assert _filename_from('attachment; filename="../../x"', "http://h/") == "x"
    assert _filename_from('attachment; filename=".."', "http://h/a/..") == "download"
    assert _filename_from('attachment; filename="dir/"', "http://h/f") == "f"
