"""A registry (or a URL) cannot exhaust pybuild's memory (issue 14, attack
11), and what a build downloads has configurable caps.

Each attack runs the real `pybuild` in a subprocess against the real
registry fixture, and its peak memory is read from wait4's ru_maxrss:
- a gzip layer of 5 GiB of zeros (5 MB compressed, written streamed here)
  is inflated a bounded piece at a time: pulled whole under 200 MB, or
  refused by `[limits] max_layer_size`;
- a 50 MB manifest is refused on its size before it is read;
- a 200 MB image config is refused on its descriptor's size before it is
  downloaded, and one whose descriptor understates it while it is read;
  a config nested too deeply for the JSON parser, or not an object, is
  one clear error;
- `ADD <url>` past `[limits] max_add_url_size` fails and leaves nothing.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from builder.registry.manifests import MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE
from fixtures import busybox
from fixtures.proxy import FaultProxy
from fixtures.servers import LoopbackServer
from fixtures.pybuild import pybuild_env
from security.hostile import push_blob, push_manifest

GIB = 1 << 30
MIB = 1 << 20
ZEROS_SIZE = 5 * GIB
# sha256 and crc32 of 5 GiB of zeros, computed once with hashlib and zlib
# (hashing 5 GiB here would cost the test 10 s; pybuild hashes it anyway,
# and a wrong constant fails the pull with a diff_id mismatch).
ZEROS_SHA256 = "7f06c62352aebd8125b2a1841e2b9e1ffcbed602f381c3dcb3200200e383d1d5"
ZEROS_CRC32 = 423114947
PEAK_LIMIT = 200 * MIB


# Forks and execs the command, then writes its peak RSS (KiB) from wait4.
# A process started straight from pytest would not do: at exec, Linux
# keeps the high-water RSS of the memory it leaves, which for a child made
# by vfork or fork from pytest is pytest's own (the proxies and servers of
# these tests hold 50 MB bodies in it).
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured_build(tmp_path: Path, dockerfile: str, *, config: str | None = None,
                   root: Path | None = None) -> tuple[int, str, int]:
    """Run `pybuild build` on a context holding `dockerfile`; returns its
    exit status, its stderr and its peak resident memory in bytes."""
    work = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    (work / "ctx").mkdir(parents=True)
    (work / "ctx" / "Dockerfile").write_text(dockerfile)
    extra = []
    if config is not None:
        (work / "config.toml").write_text(config)
        extra = ["--config", str(work / "config.toml")]
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(work / "peak"), "pybuild", "build",
                           "--root", str(root or work / "root"), "--progress", "plain", *extra, str(work / "ctx")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600,
                          env=pybuild_env(tmp_path))
    return done.returncode, done.stderr, int((work / "peak").read_text()) * 1024


def gzip_of_zeros(size: int, crc32: int):
    """The pieces of a single-member gzip of `size` zero bytes (a multiple
    of 1 MiB), never more than one MiB of zeros in memory.

    Each MiB is one deflate segment ended by a full flush, which resets the
    compressor: every segment is the same ~1 KB, so the stream is that
    segment repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = deflate.compress(bytes(MIB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    finish = deflate.flush(zlib.Z_FINISH)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    for _ in range(size // MIB):
        yield segment
    yield finish + struct.pack("<II", crc32, size & 0xFFFFFFFF)


def write_zeros_gzip(layout: Path) -> dict:
    """ZEROS_SIZE zero bytes gzipped into a blob of the layout, streamed."""
    tmp = layout / "zeros.gz.part"
    digest, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out:
        for data in gzip_of_zeros(ZEROS_SIZE, ZEROS_CRC32):
            out.write(data)
            digest.update(data)
            size += len(data)
    blob = layout / "blobs" / "sha256" / digest.hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, blob)
    return {"digest": f"sha256:{digest.hexdigest()}", "size": size}


@pytest.fixture(scope="module")
def zeros_image(busybox_image, tmp_path_factory) -> str:
    """busybox plus a layer of 5 GiB of zeros (an empty archive: its end
    blocks, and zeros after them, all counted in its diff_id)."""
    layout = tmp_path_factory.mktemp("zeros-layout")
    base = (busybox_image.layout / "blobs" / "sha256" / busybox_image.layers[0].hex).read_bytes()
    layers = [{"mediaType": busybox.OCI_LAYER_GZIP, **busybox.put_blob(layout, base)},
              {"mediaType": busybox.OCI_LAYER_GZIP, **write_zeros_gzip(layout)}]
    image = busybox.write_manifest(layout, layers, [str(busybox_image.diff_ids[0]), f"sha256:{ZEROS_SHA256}"],
                                   arch=busybox.host_arch())
    busybox.write_index(layout, busybox.OCI_MANIFEST, image.manifest, image.manifest_size, "latest")
    ref = f"{busybox_image.registry.host}/zeros:latest"
    busybox.skopeo_push(layout, "latest", ref)
    return ref


def test_a_layer_inflating_to_5_gib_is_pulled_in_bounded_memory(tmp_path, zeros_image):
    status, stderr, peak = measured_build(tmp_path, f"FROM {zeros_image}\n")
    assert status == 0, stderr
    assert peak < PEAK_LIMIT, f"peak RSS {peak / MIB:.0f} MiB"


def test_max_layer_size_refuses_the_layer_while_it_inflates(tmp_path, zeros_image):
    status, stderr, peak = measured_build(tmp_path, f"FROM {zeros_image}\n",
                                          config='[limits]\nmax_layer_size = "1GiB"\n')
    assert status == 1
    assert f"is larger than {GIB} bytes (the config file's [limits] max_layer_size)" in stderr
    assert "Traceback" not in stderr
    assert peak < PEAK_LIMIT, f"peak RSS {peak / MIB:.0f} MiB"
    # Its blob is 5 MB: a cap below that refuses it before the download.
    status, stderr, _ = measured_build(tmp_path, f"FROM {zeros_image}\n",
                                       config='[limits]\nmax_layer_size = "1MiB"\n')
    assert status == 1 and f"is larger than {MIB} bytes" in stderr


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "no-length"])
def test_a_50_mb_manifest_is_refused_before_it_is_read(tmp_path, busybox_image, sized):
    # The registry itself refuses to store or serve a manifest over 4 MiB:
    # the fault proxy in front of it grows busybox's to 50 MB on the way,
    # with its Content-Length, or without one (the cap is then met while
    # reading).
    proxy = FaultProxy(busybox_image.registry.host)
    proxy.faults.pad_manifests = 50 * MIB
    proxy.faults.unsized_manifests = not sized
    try:
        status, stderr, peak = measured_build(tmp_path, f"FROM {proxy.host}/busybox:latest\n")
    finally:
        proxy.close()
    assert status == 1
    assert f"manifest larger than {MAX_MANIFEST_SIZE} bytes" in stderr
    assert "Traceback" not in stderr
    # The old client read all 50 MB first (152 MB peak); pybuild's own
    # footprint is about 60 MB.
    assert peak < 100 * MIB, f"peak RSS {peak / MIB:.0f} MiB"


def _config_of(size: int):
    """A valid image config padded to `size` bytes with a list of zeros, in 1 MiB pieces."""
    head = json.dumps({"architecture": busybox.host_arch(), "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": []}})[:-1].encode() + b',"x":['
    tail = b"0]}"
    body = size - len(head) - len(tail)
    assert body % 2 == 0

    def pieces():
        yield head
        for _ in range(body // MIB):
            yield b"0," * (MIB // 2)
        yield b"0," * (body % MIB // 2)
        yield tail
    return pieces


@pytest.fixture(scope="module")
def huge_config(registry) -> dict:
    """A 200 MB image config in the registry (repository "huge-config")."""
    return push_blob(registry.url, "huge-config", _config_of(200 * MIB))


def _no_large_file(root: Path) -> bool:
    return all(p.stat().st_size <= MAX_CONFIG_SIZE for p in root.rglob("*") if p.is_file())


def test_a_200_mb_config_is_refused_before_it_is_downloaded(tmp_path, registry, huge_config):
    ref = push_manifest(registry.url, "huge-config", huge_config)
    root = tmp_path / "root"
    status, stderr, peak = measured_build(tmp_path, f"FROM {ref}\n", root=root)
    assert status == 1, stderr
    assert f"image config {huge_config['digest']} is larger than {MAX_CONFIG_SIZE} bytes" in stderr
    assert "Traceback" not in stderr
    # The old client stored all 200 MB, read them whole and parsed them
    # (1.9 GB peak), and built the image.
    assert peak < 100 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    assert _no_large_file(root)


def test_a_config_larger_than_its_descriptor_says_is_cut_while_it_is_read(tmp_path, registry, huge_config):
    # The manifest names the 200 MB blob's digest with a size under the cap:
    # the download stops at the size the descriptor allows.
    ref = push_manifest(registry.url, "huge-config", {**huge_config, "size": 1000}, tag="lying")
    root = tmp_path / "root"
    status, stderr, peak = measured_build(tmp_path, f"FROM {ref}\n", root=root)
    assert status == 1, stderr
    assert "blob is larger than the 1000 bytes expected" in stderr
    assert "Traceback" not in stderr
    assert peak < 100 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    assert _no_large_file(root)


@pytest.mark.parametrize("body, detail", [
    (b"[" * (1 << 20) + b"]" * (1 << 20), "nested too deeply"),
    (b'["architecture", "os"]', "not a JSON object"),
], ids=["nested", "list"])
def test_a_config_json_cannot_crash_the_build(tmp_path, registry, body, detail):
    ref = push_manifest(registry.url, "odd-config", push_blob(registry.url, "odd-config", lambda: [body]))
    status, stderr, _ = measured_build(tmp_path, f"FROM {ref}\n")
    assert status == 1, stderr
    assert f"is not valid JSON: {detail}" in stderr
    assert "Traceback" not in stderr


class _Streaming(http.server.BaseHTTPRequestHandler):
    """8 MiB of bytes, with a Content-Length or (path /chunked) without one;
    /gzip-bomb: 1 GiB of zeros in 1 MB, as `Content-Encoding: gzip`."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        if self.path == "/gzip-bomb":
            self.send_header("Content-Encoding", "gzip")
            pieces = gzip_of_zeros(GIB, _crc32_of_zeros(GIB))
        else:
            pieces = [b"z" * (64 << 10)] * 128
        if self.path == "/sized":
            self.send_header("Content-Length", str(8 * MIB))
        else:
            self.send_header("Connection", "close")  # no length: the end is the connection's
        self.end_headers()
        for piece in pieces:
            try:
                self.wfile.write(piece)
            except OSError:
                return  # the client gave up: what the cap is for


def _crc32_of_zeros(size: int) -> int:
    crc, block = 0, bytes(MIB)
    for _ in range(size // MIB):
        crc = zlib.crc32(block, crc)
    return crc


@pytest.fixture
def streaming_server():
    with LoopbackServer(_Streaming) as server:
        yield server.url


@pytest.mark.parametrize("path", ["/sized", "/chunked"])
def test_add_url_over_max_add_url_size_fails_and_leaves_nothing(tmp_path, busybox_image, streaming_server, path):
    root = tmp_path / "root"
    config = '[limits]\nmax_add_url_size = "1MiB"\n'
    status, stderr, _ = measured_build(tmp_path, f"FROM {busybox_image.ref}\nADD {streaming_server}{path} /big\n",
                                       config=config, root=root)
    assert status == 1, stderr
    assert f"larger than {MIB} bytes (the config file's [limits] max_add_url_size)" in stderr
    assert "Traceback" not in stderr
    assert [p for p in (root / "tmp").rglob("*")] == []
    # Without the cap the same download is fine (8 MiB).
    status, stderr, _ = measured_build(tmp_path, f"FROM {busybox_image.ref}\nADD {streaming_server}{path} /big\n",
                                       root=root)
    assert status == 0, stderr


def test_add_url_gzip_bomb_is_decoded_in_bounded_memory(tmp_path, busybox_image, streaming_server):
    # requests decodes a Content-Encoding itself (as Go's client does for
    # BuildKit): urllib3 >= 2.6 inflates no more per read than was asked.
    status, stderr, peak = measured_build(tmp_path, f"FROM {busybox_image.ref}\nADD {streaming_server}/gzip-bomb /z\n",
                                          config='[limits]\nmax_add_url_size = "64MiB"\n')
    assert status == 1 and f"larger than {64 * MIB} bytes" in stderr, stderr
    assert peak < PEAK_LIMIT, f"peak RSS {peak / MIB:.0f} MiB"
