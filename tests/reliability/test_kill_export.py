"""`kill -9` of the real `pybuild` CLI while it writes an output: the
temporary it was filling (`.pybuild-export-<token>-*`, in the destination
for `type=local`, beside it for archives and layouts) is removed by the
next export into the same destination, which comes out whole. Temporary
names planted in a destination (a pull request's checkout) with a dead
token, a live-looking one or the pid-numbered names of old pybuilds stop
no export and are never written through. The helpers are test_kill's.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from builder.export import scratch
from reliability.test_kill import (Build, _assert_nothing_survives, _assert_reclaimed, _context, _next_command,
                                   _wait_until)

# 8 files of 24 MiB: the export copies for long enough to be caught at it
BIG_STEP = ("RUN mkdir /big && for i in 1 2 3 4 5 6 7 8; do "
            "dd if=/dev/urandom of=/big/f$i bs=1M count=24 2>/dev/null; done && echo hello > /hello\n")


def _temporaries(directory: Path, pid: int | None = None) -> list[str]:
    """Export temporaries under `directory` (of the process `pid`)."""
    start = f"{scratch.PREFIX}{pid}_" if pid is not None else ".pybuild-"
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".pybuild-*") if p.name.startswith(start))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("output", ["local", "tar", "oci-directory"])
def test_the_next_export_takes_back_what_a_killed_one_left(tmp_path, busybox_image, output):
    root = tmp_path / "root"
    out = tmp_path / "out"
    out.mkdir()
    dest = {"local": out / "rootfs", "tar": out / "rootfs.tar", "oci-directory": out / "layout"}[output]
    option = {"local": f"type=local,dest={dest}", "tar": f"type=tar,dest={dest}",
              "oci-directory": f"type=oci,tar=false,dest={dest}"}[output]
    context = _context(tmp_path, f"FROM {busybox_image.ref}\n{BIG_STEP}")
    _next_command(root, "build", "--isolation", "builtin", str(context))  # the step, cached

    build = Build(tmp_path, root, context, "builtin", "-o", option, mark=uuid.uuid4().hex)
    _wait_until(lambda: _temporaries(out, build.pid), what="the export's temporary")
    died = build.kill()
    _assert_nothing_survives(build, died)
    assert _temporaries(out, build.pid), "the killed export left its temporary"

    _next_command(root, "build", "--isolation", "builtin", "-o", option, str(context))
    assert _temporaries(out) == []
    _assert_reclaimed(root, build)
    if output == "local":
        assert (dest / "hello").read_text() == "hello\n"
        assert sorted(os.listdir(dest / "big")) == [f"f{i}" for i in range(1, 9)]
        assert all((dest / "big" / f"f{i}").stat().st_size == 24 << 20 for i in range(1, 9))
    elif output == "tar":
        import tarfile

        with tarfile.open(dest) as tar:
            assert tar.extractfile("hello").read() == b"hello\n"
            assert tar.getmember("big/f8").size == 24 << 20
    else:
        assert (dest / "oci-layout").is_file() and (dest / "index.json").is_file()


def test_planted_temporary_names_in_a_destination(tmp_path, busybox_image):
    """A checkout holding `.pybuild-export-*` names: symlinks to a victim
    under a dead token, a well-formed token nobody holds (the pid of this
    very test) and the old pid-numbered names (which used to fail the
    export with EEXIST). The export succeeds, the victim is untouched."""
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "checkout"
    (dest / "bin").mkdir(parents=True)
    planted = []
    for directory in (dest, dest / "bin"):
        for owner in (f"{os.getpid()}_0badf00d", "12345_deadbeef"):
            for random in ("00000001", "00000002"):
                planted.append(directory / f"{scratch.PREFIX}{owner}-{random}")
                planted[-1].symlink_to(victim)
        old_style = directory / ".pybuild-export-99999-1"  # not ours by name now: left alone
        old_style.symlink_to(victim)
    context = _context(tmp_path, f"FROM {busybox_image.ref}\nRUN echo hello > /bin/hello\n")

    _next_command(root, "build", "--isolation", "builtin", "-o", f"type=local,dest={dest}", str(context))
    assert victim.read_bytes() == b"precious"
    assert not any(os.path.lexists(p) for p in planted)
    assert _temporaries(dest) == [".pybuild-export-99999-1", "bin/.pybuild-export-99999-1"]
    assert (dest / "bin" / "hello").read_text() == "hello\n"
    for path in dest.rglob(".pybuild-export-99999-1"):
        path.unlink()
