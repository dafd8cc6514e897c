"""pybuild's binfmt_misc registrations (runtime/binfmt_register.py): the
interpreter is opened through a read-only bind mount, so a process it runs
cannot change the host's file through /proc/PID/exe; handlers of other
tools are told apart and warned about (runtime/binfmt.py).

Real handlers on the host's binfmt_misc, each with a magic of its own
(a `#!`-less script marker, or s390x's ELF header, which no other test
emulates), removed after each test. The interpreter of the script handlers
is a copy of dash: binfmt_misc runs `interp SCRIPT`, dash runs the script.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from runtime import binfmt
from runtime.binfmt_register import plan_install, register, unregister

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not binfmt.mounted(),
                                reason="registering with binfmt_misc needs root and binfmt_misc mounted")

S390X = binfmt.ARCHES["s390x"]


@pytest.fixture
def script_handler(tmp_path):
    """A private handler (name, magic, dash copy) and a script it runs;
    whatever handler the test registered under that name is removed after."""
    tag = f"pybuild-test-{uuid.uuid4().hex[:10]}"
    interpreter = tmp_path / "interp"
    shutil.copy2(os.path.realpath(shutil.which("dash") or "/bin/dash"), interpreter)
    script = tmp_path / "script"
    script.write_text(f"#{tag}\nsleep 30\n")
    script.chmod(0o755)
    yield tag, interpreter, script
    unregister(tag)


def _running(script: Path) -> subprocess.Popen:
    process = subprocess.Popen([str(script)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not os.path.exists(f"/proc/{process.pid}/exe"):
        time.sleep(0.05)
    return process


def _attack(pid: int) -> dict[str, int]:
    """What a root step tries on its emulator through /proc/PID/exe: the
    errno of each attempt (0: it worked)."""
    exe = f"/proc/{pid}/exe"
    results = {}
    for name, attempt in (("chmod", lambda: os.chmod(exe, 0o4755)), ("chown", lambda: os.chown(exe, 0, 1)),
                          ("truncate", lambda: os.truncate(exe, 0))):
        try:
            attempt()
            results[name] = 0
        except OSError as exc:
            results[name] = exc.errno
    return results


def _stat(path: Path) -> tuple:
    found = os.stat(path)
    return found.st_mode, found.st_uid, found.st_gid, found.st_size, found.st_ctime_ns


def test_a_read_only_registration_keeps_the_interpreter_unchanged(script_handler):
    tag, interpreter, script = script_handler
    handler = binfmt.Handler(tag, True, f"{binfmt.READ_ONLY_DIR}/{tag}", "F", 0, f"#{tag}".encode(), b"")
    assert handler.read_only
    mounts_before = Path("/proc/self/mountinfo").read_text()
    register(handler, source=str(interpreter))
    # Nothing of the registering namespace is left here: no mount, no directory.
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert not Path(binfmt.READ_ONLY_DIR).exists()
    registered = next(h for h in binfmt.handlers() if h.name == tag)
    assert registered.read_only and registered.enabled and "F" in registered.flags
    before = _stat(interpreter)
    process = _running(script)
    try:
        assert os.stat(f"/proc/{process.pid}/exe").st_ino == os.stat(interpreter).st_ino  # the emulator is ours
        assert _attack(process.pid) == {"chmod": errno.EROFS, "chown": errno.EROFS, "truncate": errno.EROFS}
    finally:
        process.kill()
        process.wait()
    assert _stat(interpreter) == before


def test_a_plain_registration_lets_the_interpreter_be_changed(script_handler):
    """The attack the read-only mount stops, on a registration made the
    usual way (as systemd-binfmt and, before, pybuild made them): so the
    test above measures the mount, not some other refusal."""
    tag, interpreter, script = script_handler
    handler = binfmt.Handler(tag, True, str(interpreter), "F", 0, f"#{tag}".encode(), b"")
    assert not handler.read_only
    register(handler)
    process = _running(script)
    try:
        done = _attack(process.pid)
    finally:
        process.kill()
        process.wait()
    # (truncating a running executable is ETXTBSY whatever its mount)
    assert (done["chmod"], done["chown"]) == (0, 0), done
    assert os.stat(interpreter).st_gid == 1  # the chown's; it cleared the chmod's setuid bit


def test_unregister_of_a_handler_already_gone_is_no_error(script_handler):
    tag, _, _ = script_handler
    unregister(tag)  # never registered
    for control in ("status", "register"):  # "-1" to status would remove every handler
        with pytest.raises(binfmt.BinfmtError, match="not a binfmt_misc handler"):
            unregister(control)
    assert binfmt.globally_enabled()


@pytest.fixture
def s390x_rootfs(tmp_path):
    """A rootfs whose /bin/sh has s390x's ELF header; no s390x handler
    before the test, none after it."""
    if [h for h in binfmt.handlers() if h.arch == S390X]:
        pytest.skip("s390x handlers are registered on this host already")
    (tmp_path / "rootfs/bin").mkdir(parents=True)
    (tmp_path / "rootfs/bin/sh").write_bytes(S390X.magic() + bytes(44))
    yield tmp_path / "rootfs"
    for handler in binfmt.handlers():
        if handler.arch == S390X:
            unregister(handler.name)


def test_a_step_emulated_through_another_tools_handler_is_warned_about_once(s390x_rootfs):
    assert binfmt.emulation_warning(s390x_rootfs) is None  # no handler: unrunnable_reason's to say
    theirs = binfmt.Handler("qemu-s390x", True, "/usr/bin/qemu-s390x-static", "F", 0, S390X.magic(), S390X.mask())
    register(theirs)
    warning = binfmt.emulation_warning(s390x_rootfs)
    assert warning and "\n" not in warning
    assert "qemu-s390x" in warning and "/usr/bin/qemu-s390x-static" in warning and "/proc/PID/exe" in warning
    assert "`pybuild binfmt --install s390x --force`" in warning
    assert binfmt.emulation_warning(s390x_rootfs) is None  # once per process
    plan_install(S390X, force=True).apply()
    assert [h.read_only for h in binfmt.handlers() if h.arch == S390X] == [True]
    assert binfmt.unrunnable_reason(s390x_rootfs) is None
    assert binfmt.emulation_warning(s390x_rootfs) is None


def test_a_handler_of_another_name_is_named_with_how_to_remove_it(s390x_rootfs):
    plan_install(S390X).apply()
    other = binfmt.Handler(f"other-s390x-{uuid.uuid4().hex[:6]}", True, "/usr/bin/qemu-s390x-static", "F", 0,
                           S390X.magic(), S390X.mask())
    register(other)
    warning = binfmt.emulation_warning(s390x_rootfs)
    assert warning and other.name in warning and f"echo -1 > /proc/sys/fs/binfmt_misc/{other.name}" in warning
    assert "`pybuild binfmt --install s390x`" in warning  # pybuild's own is there: no --force needed
