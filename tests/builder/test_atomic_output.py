"""Output files and directories are swapped into place whole; what an
exporter killed by SIGKILL left in or beside them goes with the next
export, told apart from a running exporter's by its lease
(builder/export/scratch.py). Planted temporary names neither stop an
export nor are written through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from builder.export import scratch
from builder.export.oci import atomic_directory, atomic_file
from builder.export.rootfs import write_local
from runtime.fsutil import remove_tree
from runtime.lease import token

ROOT = Path(__file__).resolve().parents[2]

# Holds its export lease until stdin closes; prints its token first.
_EXPORTER = ("import sys\nfrom builder.export import scratch\nfrom runtime.lease import token\n"
             "with scratch.exporting():\n    print(token(), flush=True)\n    sys.stdin.read()\n")


class Exporter:
    """Another process in the middle of an export: its lease is held."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", _EXPORTER], cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.token = self.process.stdout.readline().strip()
        assert scratch.owner(f"{scratch.PREFIX}{self.token}-00000000") == self.token

    def finish(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=20) == 0
        self.process.stdout.close()

    def kill(self) -> str:
        """SIGKILL it, as a cancelled CI job is: its lease file stays, unlocked."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)
        self.process.stdin.close()
        self.process.stdout.close()
        return self.token


@pytest.fixture
def killed_token():
    owner = Exporter().kill()
    yield owner
    scratch._LEASES.drop(owner)  # what the next command's reclaim does on /dev/shm


@pytest.fixture
def live_exporter():
    exporter = Exporter()
    yield exporter
    exporter.finish()


def _temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".pybuild-*"))


def _plant(directory: Path, owner: str, victim: Path) -> dict[str, Path]:
    """A dead exporter's file, directory, and symlink to a victim."""
    planted = {
        "file": directory / f"{scratch.PREFIX}{owner}-0000aaaa",
        "dir": directory / f"{scratch.PREFIX}{owner}-0000bbbb",
        "link": directory / f"{scratch.PREFIX}{owner}-0000cccc",
        "old": directory / f"{scratch.PREFIX}{owner}-0000dddd{scratch.OLD}",
    }
    planted["file"].write_bytes(b"half an archive")
    planted["dir"].mkdir()
    (planted["dir"] / "blob").write_bytes(b"x")
    planted["link"].symlink_to(victim)
    planted["old"].mkdir()
    return planted


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_bytes(b"precious")
    os.chmod(path, 0o640)
    yield path
    assert path.read_bytes() == b"precious" and (path.stat().st_mode & 0o777) == 0o640


def test_the_next_archive_export_removes_a_killed_exporters_temporaries(tmp_path, killed_token, live_exporter,
                                                                         victim):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "image.tar"
    dead = _plant(out, killed_token, victim)
    never_leased = _plant(out, "1_00000000", victim)  # no lease file at all: dead as well
    live = out / f"{scratch.PREFIX}{live_exporter.token}-0000eeee"
    live.write_bytes(b"in progress")
    other = out / ".pybuild-export-not-a-token"
    other.write_bytes(b"not ours")

    atomic_file(dest, lambda stream: stream.write(b"whole"))
    assert dest.read_bytes() == b"whole"
    assert not any(os.path.lexists(p) for p in [*dead.values(), *never_leased.values()])
    assert live.read_bytes() == b"in progress" and other.exists()
    live.unlink()
    other.unlink()


def test_a_directory_output_does_the_same(tmp_path, killed_token, victim):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "layout"
    _plant(out, killed_token, victim)
    atomic_directory(dest, lambda root: (root / "oci-layout").write_text("{}"))
    atomic_directory(dest, lambda root: (root / "oci-layout").write_text('{"again": 1}'))
    assert (dest / "oci-layout").read_text() == '{"again": 1}'
    assert sorted(os.listdir(out)) == ["layout"]


def _image(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "busybox").write_bytes(b"\x7fELF" * 1000)
    os.link(src / "bin" / "busybox", src / "bin" / "sh")
    (src / "bin" / "ls").symlink_to("busybox")
    os.mkfifo(src / "fifo")
    return src


def test_a_local_export_removes_a_dead_exporters_temporaries_where_it_writes(tmp_path, killed_token,
                                                                             live_exporter, victim):
    src = _image(tmp_path)
    dest = tmp_path / "dest"
    (dest / "bin").mkdir(parents=True)
    _plant(dest, killed_token, victim)
    _plant(dest / "bin", killed_token, victim)
    live = dest / "bin" / f"{scratch.PREFIX}{live_exporter.token}-0000eeee"
    live.write_bytes(b"in progress")

    write_local(src, dest, owner=(0, 0), preserve_special=False)
    assert _temporaries(dest) == [live.name]
    assert (dest / "bin" / "busybox").read_bytes() == b"\x7fELF" * 1000
    assert os.readlink(dest / "bin" / "ls") == "busybox"
    assert (dest / "bin" / "sh").stat().st_ino == (dest / "bin" / "busybox").stat().st_ino
    live.unlink()


def test_a_taken_temporary_name_is_skipped_never_written_through(tmp_path, monkeypatch, victim):
    """Our own token (alive, so left alone) with the next random parts
    planted as a symlink to the victim, a file and a directory: each kind
    of entry is made under another name."""
    src = _image(tmp_path)
    dest = tmp_path / "dest"
    (dest / "bin").mkdir(parents=True)
    taken = [f"{i:08x}" for i in range(1, 4)]
    for directory in (dest, dest / "bin"):
        (directory / f"{scratch.PREFIX}{token()}-{taken[0]}").symlink_to(victim)
        (directory / f"{scratch.PREFIX}{token()}-{taken[1]}").write_bytes(b"planted")
        (directory / f"{scratch.PREFIX}{token()}-{taken[2]}").mkdir()
    counter = iter(range(1, 1 << 20))
    # every export temporary takes the names 1, 2, 3 first: all taken
    monkeypatch.setattr(scratch, "fresh_name",
                        lambda: f"{scratch.PREFIX}{token()}-{(next(counter) - 1) % 6 + 1:08x}")

    write_local(src, dest, owner=(0, 0), preserve_special=False)
    atomic_file(tmp_path / "dest" / "image.tar", lambda stream: stream.write(b"whole"))
    assert (dest / "bin" / "busybox").read_bytes() == b"\x7fELF" * 1000
    assert (dest / "image.tar").read_bytes() == b"whole"
    assert os.readlink(dest / "bin" / "ls") == "busybox"
    for directory in (dest, dest / "bin"):
        assert sorted(n for n in os.listdir(directory) if n.startswith(".")) == [
            f"{scratch.PREFIX}{token()}-{name}" for name in taken]
        for planted in directory.glob(".pybuild-*"):
            remove_tree(planted)


def test_every_name_taken_is_an_error_not_a_hang(tmp_path, monkeypatch):
    (tmp_path / f"{scratch.PREFIX}{token()}-00000001").write_bytes(b"planted")
    monkeypatch.setattr(scratch, "fresh_name", lambda: f"{scratch.PREFIX}{token()}-00000001")
    with pytest.raises(Exception, match="every one tried exists"):
        atomic_file(tmp_path / "image.tar", lambda stream: stream.write(b"whole"))
    (tmp_path / f"{scratch.PREFIX}{token()}-00000001").unlink()
