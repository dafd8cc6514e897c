"""A build context given as a tar archive (on stdin, or a tarball URL) is
unpacked with ADD's confined unpacker: members planted to write through a
symlink land inside the context, never on the host, and what docker accepts
(an absolute symlink, only stored) still works."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _build(tmp_path: Path, archive: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", "build", "--root", str(tmp_path / "root"),
                           "--progress", "plain", *args, "-"], input=archive, capture_output=True,
                          timeout=180, cwd=ROOT)


def test_a_context_archive_never_writes_through_its_own_symlinks(tmp_path, busybox_image):
    host = tmp_path / "host"
    host.mkdir()
    victim = host / "victim"
    victim.write_text("host data")
    os.chmod(victim, 0o600)
    before = (victim.read_bytes(), os.lstat(victim).st_mode, sorted(os.listdir(host)))
    archive = _tar(
        _link("d", str(host)),
        _file("d/planted", b"x"),
        _file("d/victim", b"overwritten", 0o6777),
        _link("h", "d/victim", tarfile.LNKTYPE),
        _file("Dockerfile", f"FROM {busybox_image.ref}\nCOPY d/victim /v\nRUN cat /v\n".encode()),
    )
    done = _build(tmp_path, archive)
    assert (victim.read_bytes(), os.lstat(victim).st_mode, sorted(os.listdir(host))) == before
    # The planted link is followed as if the context were `/`: the file was
    # written inside the context, where COPY reads it.
    assert done.returncode == 0, done.stderr.decode()
    assert b"overwritten" in done.stdout + done.stderr


def test_a_context_archive_keeps_an_absolute_symlink(tmp_path, busybox_image):
    archive = _tar(
        _file("data/file", b"payload"),
        _link("abs", "/data/file"),
        _file("Dockerfile", f"FROM {busybox_image.ref}\nCOPY abs /copied\nRUN cat /copied\n".encode()),
    )
    done = _build(tmp_path, archive)
    assert done.returncode == 0, done.stderr.decode()
    # COPY follows a context symlink as if the context were `/`.
    assert b"payload" in done.stdout + done.stderr


def test_a_context_archive_that_climbs_out_stays_in_the_context(tmp_path, busybox_image):
    """Names climbing out are cleaned from "/", and a relative symlink
    climbing out is stored as it is, as BuildKit's extraction (chrooted in
    the context) has them: what goes through either lands in the context,
    never on the host."""
    host = tmp_path / "host"
    host.mkdir()
    up = "../../../../../../.." + str(host)
    dockerfile = _file("Dockerfile", f"FROM {busybox_image.ref}\nCOPY . /ctx/\n".encode())
    out = tmp_path / "out"
    archive = _tar(_file("../../host/climbed", b"c"), _link("up", up), _file("up/escape", b"x"), dockerfile)
    done = _build(tmp_path, archive, "-o", f"type=local,dest={out}")
    assert done.returncode == 0, done.stderr
    assert (out / "ctx" / "host" / "climbed").read_bytes() == b"c"
    assert (out / "ctx" / host.relative_to("/") / "escape").read_bytes() == b"x"
    assert os.readlink(out / "ctx" / "up") == up
    assert os.listdir(host) == []
