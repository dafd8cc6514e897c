"""Fixtures for the runtime tests: a busybox rootfs and leak checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fixtures.tools import require_tools
from runtime.builtin import BuiltinExecutor
from runtime.errors import ExecFailed
from runtime.oci import OciExecutor
from runtime.spec import ExecSpec

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:app,root
app:x:1000:
staff:x:50:daemon,app
nogroup:x:65534:
"""



def make_busybox_rootfs(root: Path) -> Path:
    """/bin/busybox with every applet as a symlink, passwd, group, /tmp."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    listing = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout
    for entry in listing.split():
        link = root / entry
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    (root / "root").mkdir(mode=0o700)
    (root / "home" / "app").mkdir(parents=True)
    os.chown(root / "home" / "app", 1000, 1000)
    return root


@pytest.fixture(scope="session")
def busybox_template(tmp_path_factory) -> Path:
    require_tools("busybox")
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture
def busybox_rootfs(busybox_template, tmp_path) -> Path:
    """A fresh, writable copy of the busybox rootfs for one test."""
    target = tmp_path / "rootfs"
    shutil.copytree(busybox_template, target, symlinks=True)
    return target


def _mounts_under(top: Path) -> list[str]:
    """Mount points under `top`: other processes may mount elsewhere."""
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return sorted(point for point in points if point == str(top) or point.startswith(f"{top}/"))


def _children() -> set[int]:
    """Every process whose parent is this test process."""
    me = os.getpid()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                text = handle.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(text[text.rindex(b")") + 2 :].split()[1]) == me:
            found.add(int(name))
    return found


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"


def processes_in(root: Path) -> set[int]:
    """Processes whose root directory is `root`: every step process is.
    (Compared by inode: the link's text is relative to the process's own
    mount namespace.) Other test sessions may run sandboxes meanwhile."""
    want = os.stat(root)
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            info = os.stat(f"/proc/{name}/root")
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (want.st_dev, want.st_ino):
            found.add(int(name))
    return found


@pytest.fixture
def executor_scratch(tmp_path) -> Path:
    """Where the executors under test put their per-run directories."""
    return tmp_path / "scratch"


@pytest.fixture
def no_step_leaks(busybox_rootfs, executor_scratch, tmp_path):
    """Fails the test if it left a mount, a child process, a process in the
    rootfs, or a scratch directory behind. (Stricter than the session-wide
    no_leaks: it sees processes that left our tree, e.g. a pid 1.)"""
    rootfs, scratch = busybox_rootfs, executor_scratch
    mounts, children = _mounts_under(tmp_path), _children()
    yield
    # run() returns once its processes are dead: no waiting here
    assert {pid: _describe(pid) for pid in processes_in(rootfs)} == {}
    assert {pid: _describe(pid) for pid in _children() - children} == {}
    assert _mounts_under(tmp_path) == mounts
    assert not scratch.exists() or list(scratch.iterdir()) == []


def _runtime_works(runtime: str, template: Path) -> str | None:
    """None if the installed `runtime` can run a container here, else why not."""
    chunks: list[bytes] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "rootfs"
        shutil.copytree(template, root, symlinks=True)
        try:
            OciExecutor(runtime).run(ExecSpec(("true",)), root, chunks.append)
        except ExecFailed:
            return f"{runtime} cannot run containers on this host: {b''.join(chunks).decode(errors='replace').strip()}"
    return None


@pytest.fixture(params=["builtin", "runc", "crun"])
def executor(request, busybox_template, executor_scratch):
    """Each executor. A missing OCI runtime is a missing install
    (fixtures/tools.py); one that is installed but cannot drive this host's
    kernel (crun on hybrid cgroups) skips, with its own error as the reason."""
    if request.param == "builtin":
        return BuiltinExecutor(scratch=executor_scratch)
    require_tools(request.param)
    reason = _PROBES.get(request.param, ...)
    if reason is ...:
        reason = _PROBES[request.param] = _runtime_works(request.param, busybox_template)
    if reason:
        pytest.skip(reason)
    return OciExecutor(request.param, scratch=executor_scratch)


_PROBES: dict[str, str | None] = {}
