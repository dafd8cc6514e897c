"""Base layers are what their image's config says they are (issue 14,
attack 3): the uncompressed stream of every pulled layer is hashed while
it is extracted and must equal its diff_id, or the pull fails and nothing
is recorded under the chain ID — the snapshot a later `FROM` of the real
image would reuse.

The hostile images are written as OCI layouts (security/hostile.py), their
configs claiming diff_ids of our choosing, and pushed to the real registry
fixture with skopeo (which copies blobs as they are: it checks digests,
not diff_ids).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

from builder.root.worker import Worker
from fixtures import busybox
from fixtures.pybuild import pybuild_env
from security.hostile import push_image

PYBUILD = ["pybuild"]


def _pybuild(tmp_path: Path, root: Path, dockerfile: str, *args: str) -> subprocess.CompletedProcess:
    context = tmp_path / f"ctx-{len(list(tmp_path.glob('ctx-*')))}"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return subprocess.run([*PYBUILD, "build", "--root", str(root), "--progress", "plain", *args, str(context)],
                          capture_output=True, text=True, timeout=180, env=pybuild_env(tmp_path))


def _tampered_busybox() -> bytes:
    """busybox's layer with /etc/passwd rewritten: what an attacker would
    have every later `FROM busybox` of the root run with."""
    source = tarfile.open(fileobj=io.BytesIO(busybox.busybox_layer_tar()))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isreg() else None
            if member.name == "etc/passwd":
                data = b"root:x:0:0:pwned:/root:/bin/sh\n"
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _snapshots(root: Path) -> list[str]:
    """The snapshot directories (not the snapshotter's own dot-files)."""
    found = os.listdir(root / "snapshots") if (root / "snapshots").is_dir() else []
    return sorted(name for name in found if not name.startswith("."))


def test_a_layer_claiming_busybox_diff_id_is_refused_and_busybox_stays_busybox(tmp_path, busybox_image):
    registry = busybox_image.registry
    diff_id = str(busybox_image.diff_ids[0])
    hostile = push_image(registry, tmp_path / "claims-busybox", [_tampered_busybox()], with_busybox=False,
                         diff_ids=[diff_id])
    root = tmp_path / "root"

    failed = _pybuild(tmp_path, root, f"FROM {hostile}\n")
    assert failed.returncode == 1, failed.stderr
    assert f"does not match its diff_id {diff_id}" in failed.stderr
    assert "Traceback" not in failed.stderr
    # Nothing recorded under busybox's chain ID (one layer: its diff_id),
    # and the extracted files are gone.
    worker = Worker.open(root)
    try:
        assert worker.index.all_bases() == []
        assert _snapshots(root) == []
    finally:
        worker.close()

    out = tmp_path / "out"
    done = _pybuild(tmp_path, root, f"FROM {busybox_image.ref}\nRUN cat /etc/passwd > /seen\n",
                    "-o", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / "seen").read_text() == busybox.PASSWD
    assert (out / "etc" / "passwd").read_text() == busybox.PASSWD


def _with_trailing_bytes(tar: bytes) -> bytes:
    # After the end-of-archive blocks: tar readers stop before them, docker
    # hashes them into the diff_id all the same.
    return tar + b"trailing bytes after the end of the archive\n" * 40


def test_trailing_bytes_after_the_archive_count_in_the_diff_id(tmp_path, busybox_image):
    registry = busybox_image.registry
    data = busybox.busybox_layer_tar()
    small = _with_trailing_bytes(_small_layer({"data/kept": b"kept\n"}))
    true_ids = [str(busybox_image.diff_ids[0]), "sha256:" + hashlib.sha256(small).hexdigest()]
    honest = push_image(registry, tmp_path / "honest", [data, small], with_busybox=False, diff_ids=true_ids)
    without_tail = "sha256:" + hashlib.sha256(small.split(b"trailing bytes", 1)[0]).hexdigest()
    lying = push_image(registry, tmp_path / "lying", [data, small], with_busybox=False,
                       diff_ids=[true_ids[0], without_tail])
    root = tmp_path / "root"

    refused = _pybuild(tmp_path, root, f"FROM {lying}\n")
    assert refused.returncode == 1 and f"does not match its diff_id {without_tail}" in refused.stderr

    out = tmp_path / "out"
    done = _pybuild(tmp_path, root, f"FROM {honest}\n", "-o", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / "data" / "kept").read_text() == "kept\n"


def _small_layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
