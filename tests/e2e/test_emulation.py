"""Issue 17, emulation: a RUN of a foreign platform runs through
qemu-user-static (binfmt_misc, F flag) under both executors; without an
emulator for the image's architecture the step fails with one error that
names `pybuild binfmt --install`; `pybuild binfmt` shows the handlers and
`pybuild info` the platforms.

The arm64 base is the busybox_index fixture's: Debian's busybox-static:arm64.
setup.sh registers arm64 (`pybuild binfmt --install arm64,arm`); the
`emulator` fixture does it too on a machine where setup did not.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest

from e2e.helpers import ISOLATIONS
from fixtures.pybuild import pybuild_env
from fixtures.tools import strict
from runtime import binfmt, binfmt_register

pytestmark = pytest.mark.e2e

ARM64 = binfmt.ARCHES["arm64"]


def pybuild(*args: str, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=300,
                          env=pybuild_env(tmp_path))
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def _skip_or_fail(reason: str) -> None:
    __tracebackhide__ = True
    if strict():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """arm64 runs here through qemu: registered by setup.sh, else now
    (session scope: a mount of binfmt_misc made here is not one test's leak)."""
    if platform.machine() != "x86_64":
        pytest.skip("the emulation tests assume an x86_64 host (arm64 foreign)")
    if os.geteuid() != 0:
        pytest.skip("registering an emulator needs root")
    if not Path("/usr/bin/qemu-aarch64-static").exists():
        _skip_or_fail("qemu-user-static not installed (apt-get install qemu-user-static, or bash scripts/setup.sh)")
    if ARM64 not in binfmt.emulated_arches():
        pybuild("binfmt", "--install", "arm64", tmp_path=tmp_path_factory.mktemp("binfmt"))
    assert ARM64 in binfmt.emulated_arches()
    return ARM64


def _dockerfile(tmp_path: Path, text: str) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(text)
    return context


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_foreign_run_is_emulated(emulator, busybox_index, tmp_path, isolation):
    context = _dockerfile(tmp_path, f"FROM {busybox_index.ref}\nRUN uname -m > /arch\n")
    out = tmp_path / "out"
    pybuild("build", "--platform", "linux/arm64", "--isolation", isolation, "--root", str(tmp_path / "root"),
            "-o", f"type=local,dest={out}", str(context), tmp_path=tmp_path)
    assert (out / "arch").read_text() == "aarch64\n"
    assert binfmt.arch_of_header((out / "bin/busybox").read_bytes()[:20]) == ARM64
    # The same Dockerfile for the host's platform: the other manifest, native.
    native = tmp_path / "native"
    pybuild("build", "--isolation", isolation, "--root", str(tmp_path / "root"),
            "-o", f"type=local,dest={native}", str(context), tmp_path=tmp_path)
    assert (native / "arch").read_text() == "x86_64\n"


@pytest.fixture
def without_arm64_handlers(emulator):
    """Every handler that runs arm64 executables unregistered for the test,
    then registered again exactly as it was (name, magic, mask, offset,
    interpreter, flags, enabled)."""
    saved = [handler for handler in binfmt.handlers() if handler.arch == ARM64]
    try:
        for handler in saved:
            binfmt_register.unregister(handler.name)
        assert ARM64 not in binfmt.emulated_arches()
        yield
    finally:
        present = {handler.name for handler in binfmt.handlers()}
        for handler in saved:
            if handler.name not in present:
                binfmt_register.register(handler)
    restored = {handler.name: handler for handler in binfmt.handlers()}
    assert [restored.get(handler.name) for handler in saved] == saved


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_foreign_run_without_an_emulator_is_one_clear_error(without_arm64_handlers, busybox_index, tmp_path,
                                                           isolation):
    context = _dockerfile(tmp_path, f"FROM {busybox_index.ref}\nRUN uname -m > /arch\n")
    root = tmp_path / "root"
    done = pybuild("build", "--platform", "linux/arm64", "--isolation", isolation, "--root", str(root),
                   "--progress", "plain", str(context), tmp_path=tmp_path, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, done.stderr
    assert "pybuild binfmt --install arm64" in errors[0]
    assert "linux/arm64" in errors[0] and "aarch64" in errors[0]
    assert "exec format error" not in done.stderr
    # Nothing of the step stays: no mount, no scratch directory.
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]
    assert not any((root / "tmp").iterdir()) if (root / "tmp").exists() else True


def test_binfmt_shows_the_handlers(emulator, tmp_path):
    text = pybuild("binfmt", tmp_path=tmp_path).stdout
    assert "binfmt_misc: /proc/sys/fs/binfmt_misc, enabled" in text
    assert "native:    linux/amd64, linux/386" in text
    assert "linux/arm64" in text.split("emulated:", 1)[1].splitlines()[0]
    arm64_rows = [line.split() for line in text.splitlines() if " linux/arm64 " in line]
    assert arm64_rows and any(row[2] == "enabled" and "F" in row[3] for row in arm64_rows)
    # Whether each is pybuild's read-only registration, as the handler says.
    by_name = {handler.name: handler for handler in binfmt.handlers()}
    assert all(row[4] == ("yes" if by_name[row[0]].read_only else "no") for row in arm64_rows), arm64_rows

    view = json.loads(pybuild("binfmt", "--format", "json", tmp_path=tmp_path).stdout)
    assert view["mounted"] and view["enabled"] and "linux/arm64" in view["emulated"]
    assert {h["name"]: h["pybuild_read_only"] for h in view["handlers"]} == {
        name: handler.read_only for name, handler in by_name.items()}
    assert view["changes"] == []

    info = json.loads(pybuild("info", "--format", "json", "--root", str(tmp_path / "root"),
                              tmp_path=tmp_path).stdout)
    assert info["platforms"][:2] == ["linux/amd64", "linux/386"] and "linux/arm64" in info["platforms"]


def test_binfmt_mounts_binfmt_misc_when_it_is_not(emulator, tmp_path):
    """In a mount namespace of its own without binfmt_misc (the host's
    mount, and so its handlers, stay), `pybuild binfmt` mounts it."""
    script = "umount /proc/sys/fs/binfmt_misc 2>/dev/null; exec pybuild binfmt"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, env=pybuild_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mounted binfmt_misc at /proc/sys/fs/binfmt_misc\n")
    assert "qemu-aarch64" in done.stdout


def test_binfmt_install_registers_with_the_f_flag_once(emulator, tmp_path):
    """A second --install finds its registration there; the handler it
    made is Debian's interpreter with F, from pybuild's read-only mount,
    matching aarch64's ELF header."""
    done = pybuild("binfmt", "--install", "arm64", "--force", tmp_path=tmp_path).stdout
    assert "arm64: qemu-aarch64 " in done and ("already registered" in done or "registered" in done)
    again = pybuild("binfmt", "--install", "arm64", tmp_path=tmp_path).stdout
    assert "already registered read-only" in again
    handler = next(h for h in binfmt.handlers() if h.name == "qemu-aarch64")
    assert "F" in handler.flags and handler.enabled and handler.read_only
    assert handler.interpreter in ("/run/pybuild-binfmt/aarch64-binfmt-P", "/run/pybuild-binfmt/qemu-aarch64-static")
    assert not Path("/run/pybuild-binfmt").exists()  # made in the registering process's namespace only
    assert binfmt_register.host_interpreter(handler) in ("/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
                                                         "/usr/bin/qemu-aarch64-static")
    assert handler.matches(ARM64.magic()) and not handler.matches(binfmt.ARCHES["amd64"].magic())
    native = pybuild("binfmt", "--install", "amd64", tmp_path=tmp_path).stdout
    assert "amd64: native on this host" in native
    unknown = pybuild("binfmt", "--install", "vax", tmp_path=tmp_path, check=False)
    assert unknown.returncode == 1 and "unknown architecture 'vax'" in unknown.stderr


def test_binfmt_as_a_user_is_a_read_only_view(emulator, rootless):
    """Not root (an ordinary user's pybuild, tests/fixtures/rootless.py):
    the handlers are shown, registering is refused with why."""
    shown = rootless.run("binfmt")
    stdout, stderr = shown.stdout.decode(), shown.stderr.decode()
    assert shown.returncode == 0, stderr
    assert "(rootless: a read-only view)" in stdout and "linux/arm64" in stdout
    refused = rootless.run("binfmt", "--install", "arm64")
    stderr = refused.stderr.decode()
    assert refused.returncode == 1 and "needs root" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("name", ["arm64", "arm", "riscv64"])
def test_registration_matches_debians(name):
    """The magic and mask written here from the ELF header's layout are
    those Debian's qemu-user-static registers (its binfmt.d file)."""
    arch = binfmt.ARCHES[name]
    conf = Path(f"/usr/lib/binfmt.d/qemu-{arch.cpu}.conf")
    if not conf.exists():
        _skip_or_fail(f"{conf} missing (apt-get install qemu-user-static)")
    fields = conf.read_text().strip().split(":")
    ours = binfmt.Handler(f"qemu-{arch.cpu}", True, "/i", "F", 0, arch.magic(), arch.mask()).registration()
    assert ours.split(":")[4:6] == fields[4:6]


def test_handler_file_round_trip():
    """An entry as binfmt_misc shows it reads back into the line that registers it."""
    shown = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\n"
             "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")
    handler = binfmt.parse_handler("qemu-aarch64", shown)
    assert handler.enabled and handler.flags == "POF" and handler.arch == ARM64
    assert handler.magic == ARM64.magic() and handler.mask == ARM64.mask()
    assert handler.registration().startswith(":qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02")
    assert handler.registration().endswith(":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:POF")
    assert not binfmt.parse_handler("x", "disabled\ninterpreter /i\nflags: \nextension .exe\n").matches(b"MZ")


def test_the_check_reads_bin_sh_inside_the_rootfs_only(tmp_path):
    """The image's /bin/sh is untrusted: a symlink out of the rootfs resolves
    inside it, a FIFO or a device is never opened for reading."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin/sh").symlink_to("../../../../../../usr/bin/qemu-aarch64-static")
    assert binfmt.read_header(rootfs) is None and binfmt.unrunnable_reason(rootfs) is None
    (rootfs / "bin/sh").unlink()
    os.mkfifo(rootfs / "bin/sh")  # opening it for reading would wait for a writer
    assert binfmt.read_header(rootfs) is None
    (rootfs / "bin/sh").unlink()
    (rootfs / "bin/sh").write_bytes(ARM64.magic() + bytes(44))
    assert binfmt.arch_of_header(binfmt.read_header(rootfs)) == ARM64
