"""Output files and directories are swapped into place whole; what an
exporter killed by SIGKILL left beside them goes with the next export."""

from __future__ import annotations

import os
import subprocess

from builder.export.oci import atomic_directory, atomic_file


def _reaped() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid  # reaped: no process has this pid now (barring reuse)


def test_the_next_export_removes_a_killed_exporters_temp_files(tmp_path):
    dest = tmp_path / "image.tar"
    dead = _reaped()
    stale_file = tmp_path / f".image.tar.{dead}.abc123.tmp"
    stale_file.write_bytes(b"half an archive")
    stale_dir = tmp_path / f".image.tar.{dead}.def456.tmp"
    stale_dir.mkdir()
    (stale_dir / "blob").write_bytes(b"x")
    live = tmp_path / f".image.tar.{os.getppid()}.ghi789.tmp"  # a running exporter's: kept
    live.write_bytes(b"in progress")
    other = tmp_path / ".other.tar.1.x.tmp"
    other.write_bytes(b"not ours")

    atomic_file(dest, lambda out: out.write(b"whole"))
    assert dest.read_bytes() == b"whole"
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()
    live.unlink()
    other.unlink()


def test_a_directory_output_does_the_same(tmp_path):
    dest = tmp_path / "layout"
    stale = tmp_path / f".layout.{_reaped()}.q1.tmp"
    stale.mkdir()
    atomic_directory(dest, lambda root: (root / "oci-layout").write_text("{}"))
    assert (dest / "oci-layout").read_text() == "{}"
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["layout"]
