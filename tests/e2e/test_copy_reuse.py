"""A COPY's files written straight into the new snapshot, and a rebuilt COPY
that links its unchanged files from the previous result: both must give
exactly the layers a plain copy through the overlay mount gives.

Builds use SOURCE_DATE_EPOCH with rewrite-timestamp, so the directories
made "now" compare equal; the context's files carry older fixed mtimes.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from builder.build import build
from cache.statcache import StatCache
from e2e.helpers import BUILD_ERRORS

pytestmark = pytest.mark.e2e

EPOCH = 1_700_000_000
T_FILE = 1_600_000_000_000_000_000  # before EPOCH: kept by rewrite-timestamp


@pytest.fixture
def settled(monkeypatch):
    """Files the test has just written count as settled for the stat cache,
    as a checkout older than a second would (else every file is racy and
    nothing may be linked)."""
    monkeypatch.setitem(StatCache.__init__.__kwdefaults__, "racy_window_ns", 0)


def _context(path: Path, dockerfile: str) -> Path:
    files = {f"src/pkg{i % 3}/mod{i}.txt": f"module {i}\n" * (i + 1) for i in range(24)}
    files["src/run.sh"] = "#!/bin/sh\necho hi\n"
    files["src/big.bin"] = os.urandom(300_000)
    files["a.txt"] = "a\n"
    files["b.txt"] = "bb\n"
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    os.chmod(path / "src/run.sh", 0o755)
    os.symlink("pkg0/mod0.txt", path / "src/link")
    os.link(path / "src/pkg1/mod1.txt", path / "src/hard")
    (path / "Dockerfile").write_text(dockerfile)
    _age(path)
    return path


def _age(tree: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(T_FILE, T_FILE), follow_symlinks=False)


def _build(context: Path, root: Path, base: str, out: Path):
    return build(context, root=root, build_args={"BASE": base, "SOURCE_DATE_EPOCH": str(EPOCH)},
                 outputs=[f"type=oci,dest={out},tar=false,rewrite-timestamp=true"])


def _layers(layout: Path) -> list[list[tarfile.TarInfo]]:
    index = json.loads((layout / "index.json").read_text())
    blob = lambda d: layout / "blobs/sha256" / d.removeprefix("sha256:")  # noqa: E731
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    layers = []
    for layer in manifest["layers"]:
        with tarfile.open(blob(layer["digest"])) as tar:
            layers.append(tar.getmembers())
    return layers


def _copy_snapshots(root: Path) -> list[Path]:
    """The `fs` of every COPY result that carries a reuse note, oldest first."""
    found = []
    for snapshot in (root / "snapshots").iterdir():
        notes = list(snapshot.glob("note-copy-*")) if snapshot.is_dir() else []
        if notes:
            found.append((notes[0].stat().st_mtime_ns, snapshot / "fs"))
    return [fs for _, fs in sorted(found)]


COPY_APP = "ARG BASE\nFROM $BASE\nCOPY . /app\nRUN find /app -type f | sort > /listing\n"


def test_rebuild_after_changes_links_the_rest_and_equals_a_cold_build(busybox_image, tmp_path, settled):
    context = _context(tmp_path / "ctx", COPY_APP)
    root = tmp_path / "root"
    _build(context, root, busybox_image.ref, tmp_path / "out1")

    (context / "src/pkg0/mod3.txt").write_text("changed, longer than before\n")
    os.chmod(context / "src/pkg1/mod4.txt", 0o600)  # metadata only
    os.unlink(context / "src/pkg2/mod5.txt")
    (context / "src/new.txt").write_text("new\n")
    _age(context)
    second = _build(context, root, busybox_image.ref, tmp_path / "out2")
    assert second.executed_steps == 2

    previous, current = _copy_snapshots(root)
    same = lambda rel: os.lstat(previous / rel).st_ino == os.lstat(current / rel).st_ino  # noqa: E731
    assert same("app/src/pkg0/mod0.txt") and same("app/src/big.bin") and same("app/src/run.sh")
    assert not same("app/src/pkg0/mod3.txt")
    assert not same("app/src/pkg1/mod4.txt")
    assert not same("app/src/hard")  # a hard link in the context is copied, never shared
    assert os.lstat(current / "app/src/hard").st_ino == os.lstat(current / "app/src/pkg1/mod1.txt").st_ino
    assert not os.path.lexists(current / "app/src/pkg2/mod5.txt")

    cold = _build(context, tmp_path / "cold-root", busybox_image.ref, tmp_path / "out3")
    assert cold.manifest_digest == second.manifest_digest  # every layer, byte for byte

    members = {m.name: m for m in _layers(tmp_path / "out2")[-2]}
    assert "app/src/pkg2/mod5.txt" not in members
    assert members["app/src/pkg1/mod4.txt"].mode == 0o600
    assert members["app/src/new.txt"].isfile()
    assert members["app/src/hard"].islnk() or members["app/src/pkg1/mod1.txt"].islnk()
    # No tar entry refers to files shared with the other snapshot.
    assert sum(m.islnk() for m in members.values()) == 1


def test_racy_files_are_copied_not_linked(busybox_image, tmp_path):
    """Without `settled`, files written within the last second are racy:
    their digests are not trusted across builds, so nothing is linked."""
    context = _context(tmp_path / "ctx", COPY_APP)
    root = tmp_path / "root"
    _build(context, root, busybox_image.ref, tmp_path / "out1")
    (context / "a.txt").write_text("changed\n")
    _build(context, root, busybox_image.ref, tmp_path / "out2")
    previous, current = _copy_snapshots(root)
    assert os.lstat(previous / "app/b.txt").st_ino != os.lstat(current / "app/b.txt").st_ino
    assert (current / "app/a.txt").read_text() == "changed\n"


@pytest.mark.parametrize("dockerfile", [
    COPY_APP,
    "ARG BASE\nFROM $BASE\nWORKDIR /app\nCOPY . .\n",
    "ARG BASE\nFROM $BASE\nCOPY --chown=1000:1000 --chmod=0750 src/ /usr/local/share/x/\n",
    "ARG BASE\nFROM $BASE\nCOPY --chmod=u+x,go-w src /srv/\n",
    "ARG BASE\nFROM $BASE\nRUN mkdir -p /data && touch /data/keep\nCOPY src /data/\n",
    "ARG BASE\nFROM $BASE\nRUN mkdir -p /w/old && touch /w/old/x\nRUN rm -rf /w\nCOPY src /w\n",
    "ARG BASE\nFROM $BASE\nRUN mkdir -p /app/src && touch /app/src/x\nRUN rm -rf /app/src\nCOPY . /app\n",
    "ARG BASE\nFROM $BASE\nCOPY a.txt b.txt src/pkg0 /multi/\n",
    "ARG BASE\nFROM $BASE\nCOPY a.txt /single\n",
], ids=["new-dir", "workdir", "chown-chmod", "symbolic-chmod", "non-empty-dest", "whited-out-dest",
        "whiteout-inside-dest", "files-into-dir", "file-to-file"])
def test_direct_copy_equals_copy_through_the_mount(busybox_image, tmp_path, monkeypatch, dockerfile):
    context = _context(tmp_path / "ctx", dockerfile)
    direct = _build(context, tmp_path / "root-direct", busybox_image.ref, tmp_path / "out-direct")
    monkeypatch.setattr("builder.ops.file.plan_direct", lambda *args, **kwargs: None)
    mounted = _build(context, tmp_path / "root-mounted", busybox_image.ref, tmp_path / "out-mounted")
    assert direct.manifest_digest == mounted.manifest_digest


def test_failed_direct_copy_leaves_no_snapshot(busybox_image, tmp_path):
    context = _context(tmp_path / "ctx", COPY_APP)
    root = tmp_path / "root"
    _build(context, root, busybox_image.ref, tmp_path / "out1")
    before = sorted(os.listdir(root / "snapshots"))
    # The second source has a directory where the first put a file.
    (context / "other/a.txt").mkdir(parents=True)
    (context / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nCOPY a.txt other/ /app/\n")
    with pytest.raises(BUILD_ERRORS, match="non-directory: /app/a.txt"):
        _build(context, root, busybox_image.ref, tmp_path / "out2")
    assert sorted(os.listdir(root / "snapshots")) == before
