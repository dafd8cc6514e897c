"""`kill -9` of the real `pybuild` CLI (how CI runners cancel jobs) while it
pulls, runs a step under each isolation, commits, exports, and at random
points: within a second nothing the build started is alive (a step that
daemonized itself included), and after one next pybuild command on the
root no mount, scratch directory, container or lease of the dead build is
left, and `pybuild doctor` is clean without --fix. Liveness is the dead
build's lease, not an age: a build running beside it keeps its mounts.

Processes are found by a marker in their environment: the build's own
environment has it, and the Dockerfile gives it to the step with ENV.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from fixtures.tools import require_tools

ROOT = Path(__file__).resolve().parents[2]
MARK = "PYBUILD_TEST_MARK"
ISOLATIONS = ("builtin", "oci")


def _require(isolation: str) -> None:
    if isolation == "oci":
        require_tools("runc")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "builder.cli", *args]


class Build:
    """A `pybuild build` running as a child process, in its own session so
    that the kill reaches pybuild alone, as `kill -9 PID` does. `mark` is
    put in its environment (give it to the steps with `_env(mark)`)."""

    def __init__(self, tmp_path: Path, root: Path, context: Path, isolation: str, *extra: str, mark: str):
        self.mark = mark
        self.log = tmp_path / f"log-{mark}"
        self.process = subprocess.Popen(
            _cli("build", "--root", str(root), "--progress", "plain", "--isolation", isolation, *extra,
                 str(context)),
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, MARK: mark})

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> bytes:
        return self.log.read_bytes()

    def kill(self) -> float:
        """SIGKILL pybuild; returns when it died."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)
        return time.monotonic()

    def wait(self) -> None:
        assert self.process.wait(timeout=120) == 0, self.output().decode(errors="replace")


def _marked(mark: str) -> dict[int, str]:
    """pid -> command line of every process with the marker in its environment."""
    needle = f"{MARK}={mark}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if needle in environ.split(b"\0"):
                found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def _wait_until(predicate, timeout=30.0, what="the build") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _largest_file(directory: Path) -> int:
    """0 while `directory` is missing; a file renamed away as it is looked at counts as none."""
    sizes = [0]
    for path in directory.iterdir() if directory.is_dir() else ():
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            pass
    return max(sizes)


def _assert_nothing_survives(build: Build, died: float) -> None:
    """Within 1 s of pybuild's death, no process of its build is alive."""
    while True:
        left = _marked(build.mark)
        if not left:
            return
        assert time.monotonic() - died < 1.0, f"alive 1 s after pybuild died: {left}"
        time.sleep(0.02)


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / f"context-{uuid.uuid4().hex[:8]}"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


def _left_on_tmpfs(pid: int) -> list[str]:
    """Scratch dirs, OCI bundles (and the runtime state in them) and the
    lease of the process with this pid."""
    return [name for name in os.listdir("/dev/shm")
            if name.startswith("pybuild-") and re.search(rf"-{pid}_[0-9a-f]{{8}}(-|$)", name)]


def _doctor(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_cli("doctor", "--root", str(root)), capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def _next_command(root: Path, *args: str) -> None:
    done = subprocess.run(_cli(*args, "--root", str(root)), capture_output=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def _assert_reclaimed(root: Path, killed: Build) -> None:
    """What the next command must have left of the killed build: nothing."""
    assert _mounts_under(root) == []
    assert _left_on_tmpfs(killed.pid) == []
    assert _leases_of(root, killed.pid) == []
    doctor = _doctor(root)
    assert doctor.returncode == 0 and doctor.stdout.strip() == "ok", doctor.stdout + doctor.stderr


def _leases_of(root: Path, pid: int) -> list[str]:
    leases = root / "snapshots" / ".leases"
    return [name for name in os.listdir(leases) if name.startswith(f"{pid}_")] if leases.is_dir() else []


def _step_cgroups(pid: int) -> list[str]:
    """The cgroup directories the steps of this pybuild run in (their
    scratch dirs record them), if any."""
    records = [Path("/dev/shm", name, "container") for name in _left_on_tmpfs(pid)]
    return [line for record in records if record.exists() for line in record.read_text().split("\n")[2:] if line]


def _env(mark: str) -> str:
    return f"ENV {MARK}={mark}\n"


# /started appears in the step's upper directory once the daemon runs
RUNNING_STEP = "RUN setsid sh -c 'sleep 1001 </dev/null >/dev/null 2>&1 &' && touch /started && sleep 1002\n"


def _started(root: Path, mark: str, name: str = "started"):
    """The step made `/name` in its upper directory, and sleeps."""
    return lambda: (list(root.glob(f"snapshots/*/fs/{name}"))
                    and any(line.startswith("sleep ") for line in _marked(mark).values()))


@pytest.mark.parametrize("limits", [(), ("--memory", "64m", "--pids-limit", "100")], ids=["", "limits"])
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_kill_during_a_run_step_kills_the_step_and_its_daemon(tmp_path, busybox_image, isolation, limits):
    """With limits, a builtin step has cgroups of its own too: they go."""
    _require(isolation)
    root = tmp_path / "root"
    mark = uuid.uuid4().hex
    build = Build(tmp_path, root, _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark)}{RUNNING_STEP}"),
                  isolation, *limits, mark=mark)
    _wait_until(_started(root, mark), what="the step")
    _wait_until(lambda: any("sleep 1001" in line for line in _marked(mark).values()), what="the daemon")
    cgroups = _step_cgroups(build.pid)
    assert bool(cgroups) == (isolation == "oci" or bool(limits))
    assert all(os.path.isdir(d) for d in cgroups)
    died = build.kill()
    _assert_nothing_survives(build, died)
    if isolation == "oci":
        assert not [d for d in cgroups if os.path.isdir(d)], "the supervisor removed the step's cgroups"
    assert _mounts_under(root), "the killed build's overlay stays mounted until the next command"
    _next_command(root, "build", "--isolation", isolation,
                  str(_context(tmp_path, f"FROM {busybox_image.ref}\nRUN echo quick\n")))
    _assert_reclaimed(root, build)
    assert not [d for d in cgroups if os.path.isdir(d)], "the step's cgroups are removed"


def test_kill_of_pybuild_supervisor_and_runtime_then_the_next_command_stops_the_step(
        tmp_path, busybox_image):
    """kill -9 of every process above an OCI step (pybuild, the supervisor,
    runc) so that nothing could stop it: the next command finds the dead
    build's bundle by its lease and stops the container."""
    _require("oci")
    root = tmp_path / "root"
    mark = uuid.uuid4().hex
    build = Build(tmp_path, root, _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark)}{RUNNING_STEP}"),
                  "oci", mark=mark)
    _wait_until(_started(root, mark), what="the step")
    above = [pid for pid, line in _marked(mark).items() if line.startswith((sys.executable, "/usr/sbin/runc", "runc"))]
    for pid in above:
        os.kill(pid, signal.SIGSTOP)  # none may see another die and act
    for pid in above:
        os.kill(pid, signal.SIGKILL)
    build.process.wait(timeout=20)
    assert any("sleep 1002" in line for line in _marked(mark).values()), "the container outlives them all"
    _next_command(root, "du")
    _wait_until(lambda: not _marked(mark), timeout=5, what="the step to be stopped")
    _assert_reclaimed(root, build)


def test_kill_during_pull(tmp_path, fault_proxy, busybox_image):
    root = tmp_path / "root"
    context = _context(tmp_path, f"FROM {fault_proxy.host}/busybox:latest\nRUN echo ok\n")
    fault_proxy.faults.stall_blob_after = 100_000  # the config passes whole; the layer hangs
    build = Build(tmp_path, root, context, "builtin", mark=uuid.uuid4().hex)
    ingest = root / "content" / "ingest"
    # Past 10 kB: the layer, stalled at 100 kB. The config (~1 kB) also
    # passes through ingest, and is renamed into the store a moment later.
    _wait_until(lambda: _largest_file(ingest) > 10_000)
    died = build.kill()
    _assert_nothing_survives(build, died)
    assert any(ingest.iterdir()), "the half-downloaded blob stays until the next command"
    fault_proxy.faults.stall_blob_after = None
    _next_command(root, "build", "--isolation", "builtin", str(context))
    _assert_reclaimed(root, build)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_kill_while_committing_a_step(tmp_path, busybox_image, isolation):
    _require(isolation)
    root = tmp_path / "root"
    mark = uuid.uuid4().hex
    context = _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark)}"
                                 "RUN dd if=/dev/urandom of=/big bs=1M count=32 2>/dev/null && echo made\n")
    build = Build(tmp_path, root, context, isolation, mark=mark)
    _wait_until(lambda: re.search(rb"#\d+ [\d.]+ made", build.output()) is not None)
    died = build.kill()  # the step has ended: its diff is being committed
    _assert_nothing_survives(build, died)
    _next_command(root, "build", "--isolation", isolation, str(context))
    _assert_reclaimed(root, build)


def test_kill_during_export(tmp_path, busybox_image):
    root = tmp_path / "root"
    out = tmp_path / "image.tar"
    context = _context(tmp_path, f"FROM {busybox_image.ref}\n"
                                 "RUN dd if=/dev/urandom of=/big bs=1M count=48 2>/dev/null\n")
    build = Build(tmp_path, root, context, "builtin", "-o", f"type=oci,dest={out}", mark=uuid.uuid4().hex)
    _wait_until(lambda: any(p.name.startswith(f".pybuild-export-{build.pid}_") for p in tmp_path.iterdir()),
                what="the export's temp file")
    died = build.kill()
    _assert_nothing_survives(build, died)
    _next_command(root, "build", "--isolation", "builtin", "-o", f"type=oci,dest={out}", str(context))
    _assert_reclaimed(root, build)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pybuild-")]


def test_kill_at_random_points(tmp_path, busybox_image):
    """Pull, RUN under either isolation, commit, export: wherever the kill
    lands, and two kills land under each isolation. A build that ends
    before its delay is no kill: the next delay is drawn from below how
    long that build took. PYBUILD_CRASH_SEED replays a run."""
    require_tools("runc")
    seed = int(os.environ.get("PYBUILD_CRASH_SEED", str(random.randrange(1 << 30))))
    chooser = random.Random(seed)
    out = tmp_path / "image.tar"
    planned, max_attempts = 2, 10
    kills = dict.fromkeys(ISOLATIONS, 0)
    latest = dict.fromkeys(ISOLATIONS, 3.0)  # the latest a kill is tried after the build starts
    for attempt in range(max_attempts):
        if min(kills.values()) >= planned:
            break
        isolation = min(ISOLATIONS, key=kills.get)  # alternates while both are short
        root = tmp_path / f"root-{isolation}"  # a root may hold an earlier kill's leftovers
        mark = uuid.uuid4().hex
        context = _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark)}"
                                     "RUN setsid sh -c 'sleep 1001 </dev/null >/dev/null 2>&1 &'; sleep 0.5; "
                                     "dd if=/dev/urandom of=/big bs=1M count=16 2>/dev/null\n"
                                     "COPY Dockerfile /Dockerfile\n")
        started = time.monotonic()
        build = Build(tmp_path, root, context, isolation, "-o", f"type=oci,dest={out}", mark=mark)
        delay = chooser.uniform(0.2, latest[isolation])
        why = f"seed {seed}, attempt {attempt}, {isolation}, killed after {delay:.2f} s"
        try:
            build.process.wait(timeout=delay)
            died = None
        except subprocess.TimeoutExpired:
            died = build.kill()
        if build.process.returncode != -signal.SIGKILL:  # it finished first: nothing was killed
            assert build.process.returncode == 0, f"{why}: {build.output().decode(errors='replace')}"
            latest[isolation] = max(0.2, 0.8 * (time.monotonic() - started))
            continue
        kills[isolation] += 1
        try:
            _assert_nothing_survives(build, died)
            _next_command(root, "du")
            _assert_reclaimed(root, build)
        except AssertionError as exc:
            raise AssertionError(f"{why}: {exc}") from None
    assert min(kills.values()) >= planned, f"seed {seed}: kills landed {kills} in {max_attempts} attempts"
    _next_command(tmp_path / "root-builtin", "build", "--isolation", "builtin", "-o", f"type=oci,dest={out}",
                  str(_context(tmp_path, f"FROM {busybox_image.ref}\nRUN echo after\n")))
    with tarfile.open(out) as tar:
        assert "index.json" in tar.getnames()


def test_a_live_build_keeps_its_mount_while_a_dead_ones_is_reclaimed(tmp_path, busybox_image):
    """Liveness by lease: build A runs a step while build B, on the same
    root, is killed in its own step. The next command unmounts B's
    overlay and leaves A's; what B left that names no owner (its
    unrecorded snapshot, its scratch under ROOT/tmp) waits until no build
    uses the root (B's lease stays to say so), then goes with the next
    command."""
    root = tmp_path / "root"
    mark_a, mark_b = uuid.uuid4().hex, uuid.uuid4().hex
    a = Build(tmp_path, root, _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark_a)}"
                                                 "RUN touch /started-a && sleep 8\n"), "builtin", mark=mark_a)
    _wait_until(_started(root, mark_a, "started-a"), what="build A's step")
    mounts_a = _mounts_under(root)
    assert len(mounts_a) == 1
    b = Build(tmp_path, root, _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark_b)}{RUNNING_STEP}"),
              "builtin", mark=mark_b)
    _wait_until(_started(root, mark_b), what="build B's step")
    assert len(_mounts_under(root)) == 2
    died = b.kill()
    _assert_nothing_survives(b, died)
    _next_command(root, "du")
    assert _mounts_under(root) == mounts_a, "B's overlay is gone, A's is still mounted"
    assert a.process.poll() is None and _marked(mark_a), "A's step still runs"
    assert _leases_of(root, b.pid), "B's lease stays while its other leftovers wait"
    a.wait()
    _next_command(root, "du")
    _assert_reclaimed(root, b)


def test_kill_while_a_step_uses_an_ssh_agent_of_the_build(tmp_path, busybox_image):
    """`--ssh default=KEY` makes pybuild start an ssh-agent holding the key:
    it dies with pybuild too, and its socket directory goes with the next
    command."""
    require_tools("ssh-agent", "ssh-keygen", "ssh-add")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    root = tmp_path / "root"
    mark = uuid.uuid4().hex
    context = _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark)}"
                                 "RUN --mount=type=ssh touch /started && sleep 1002\n")
    build = Build(tmp_path, root, context, "builtin", "--ssh", f"default={key}", mark=mark)
    _wait_until(_started(root, mark), what="the step")
    assert any("ssh-agent" in line for line in _marked(mark).values())
    died = build.kill()
    _assert_nothing_survives(build, died)
    _next_command(root, "du")
    _assert_reclaimed(root, build)
