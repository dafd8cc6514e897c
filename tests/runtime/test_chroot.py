"""`--isolation chroot` (issue 16): the executor on its own, as root on the
host with every namespace and with none (`namespaces=()`: the code path of
a container that may not mount), then the real `pybuild` with it, and last
the real `pybuild` as root of an unprivileged container would run it: a
seccomp filter refusing mount(2), unshare(2), setns(2) and namespace
clones (docker's profile without CAP_SYS_ADMIN) and docker's default
capability set (setpriv), where builtin and runc cannot work and the
snapshots are copies. There the image must equal the builtin one's.

Processes of a step are found by their root directory (executor tests) or
by a marker in their environment (CLI tests), as tests/reliability does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from fixtures.pybuild import SOURCE, pybuild_env
from fixtures.seccomp_jail import contained as in_container
from fixtures.tools import require_tools
from runtime.chroot import ChrootExecutor, permitted_namespaces
from runtime.errors import ExecFailed
from runtime.executor import ExecCancelled, SandboxFailed
from runtime.spec import BindMount, ExecSpec, NetworkMode, TmpfsMount

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MARK = "PYBUILD_TEST_MARK"
EPOCH = "1700000000"


def sh(script: str, **kwargs) -> ExecSpec:
    kwargs.setdefault("env", (PATH,))
    return ExecSpec(("/bin/sh", "-c", script), **kwargs)


def run(executor, spec: ExecSpec, rootfs: Path) -> str:
    chunks: list[bytes] = []
    executor.run(spec, rootfs, chunks.append)
    return b"".join(chunks).decode()


def tree_state(top: Path) -> dict[str, tuple]:
    """Every entry under `top` (and `top`) with what a layer would record."""
    found = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st = os.lstat(path)
        found[str(path.relative_to(top))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                                             st.st_rdev)
    return found


@pytest.fixture(params=["namespaces", "none"])
def chroot(request, executor_scratch):
    """The executor with every namespace the host permits (all, as root
    here), and with none: what it does in an unprivileged container."""
    if request.param == "namespaces" and not {"mount", "pid"} <= permitted_namespaces():
        pytest.fail(f"root on the host may not create namespaces: {sorted(permitted_namespaces())}")
    return ChrootExecutor(scratch=executor_scratch, namespaces=None if request.param == "namespaces" else ())


# --- the executor ---------------------------------------------------------------


def test_probe_finds_every_namespace_as_root():
    assert permitted_namespaces() == {"uts", "ipc", "net", "pid", "mount"}


def test_step_runs_as_its_user_with_devices_and_hosts(chroot, busybox_rootfs, no_step_leaks):
    script = ("id -u; id -g; id -G; pwd; echo x > /dev/null; head -c 5 /dev/zero | wc -c; "
              "head -c 5 /dev/urandom | wc -c; grep -c localhost /etc/hosts; grep -c nameserver /etc/resolv.conf")
    out = run(chroot, sh(script, user="app", cwd="/home/app"), busybox_rootfs)
    lines = out.split()
    assert lines[:7] == ["1000", "1000", "1000", "10", "50", "/home/app", "5"] and lines[7] == "5", out
    assert int(lines[8]) == 2 and int(lines[9]) >= 1, out


def test_rootfs_is_left_as_it_was(chroot, busybox_rootfs, no_step_leaks):
    """The mount points, devices and /etc files made for the step are gone
    after it; the directories they were made in keep the time of that, which
    is no part of the layer (runtime.prune leaves out a directory whose mtime
    is all that changed, as BuildKit's differ does). /proc and /sys made to
    mount on stay, as in BuildKit 0.13 (testdata/compat/run-minimal-rootfs)."""
    (busybox_rootfs / "dev").mkdir()  # as most images have it: empty
    before = tree_state(busybox_rootfs)
    run(chroot, sh("test -c /dev/null && test -s /etc/hosts && test -d /dev/shm"), busybox_rootfs)
    after = tree_state(busybox_rootfs)
    assert {name for name in after if name not in before} == {"proc", "sys"}

    def without_dir_times(state: dict) -> dict:
        return {name: found[:4] + found[5:] if stat.S_ISDIR(found[0]) else found for name, found in state.items()
                if name not in ("proc", "sys")}

    assert without_dir_times(after) == without_dir_times(before)


def test_an_image_file_is_not_replaced_without_mounts(busybox_rootfs, executor_scratch, no_step_leaks):
    (busybox_rootfs / "etc" / "hosts").write_text("10.0.0.1 image\n")
    executor = ChrootExecutor(scratch=executor_scratch, namespaces=())
    assert run(executor, sh("cat /etc/hosts"), busybox_rootfs) == "10.0.0.1 image\n"
    assert (busybox_rootfs / "etc" / "hosts").read_text() == "10.0.0.1 image\n"


def test_exit_code(chroot, busybox_rootfs, no_step_leaks):
    chunks: list[bytes] = []
    with pytest.raises(ExecFailed) as info:
        chroot.run(sh("echo failing; exit 3"), busybox_rootfs, chunks.append)
    assert info.value.exit_code == 3 and info.value.tail == "failing"
    assert str(info.value) == 'process "/bin/sh -c echo failing; exit 3" did not complete successfully: exit code: 3'


def test_a_daemon_dies_when_the_command_ends(chroot, busybox_rootfs, no_step_leaks):
    """No pid namespace to end with the step ("none"): the helper, their
    subreaper, kills what the step left running in sessions of their own.
    no_step_leaks fails the test on any process left in the rootfs."""
    started = time.monotonic()
    out = run(chroot, sh("setsid sh -c 'sleep 1000 & sleep 1000' & setsid sleep 1000 & echo started"),
              busybox_rootfs)
    assert out == "started\n"
    assert time.monotonic() - started < 10


def test_cancel_kills_the_whole_step(chroot, busybox_rootfs, no_step_leaks):
    seen = threading.Event()
    outcome: list[BaseException] = []

    def output(data: bytes) -> None:
        if b"started" in data:
            seen.set()

    def step() -> None:
        try:
            chroot.run(sh("setsid sh -c 'sleep 1000 & sleep 1000' & echo started; sleep 1000"), busybox_rootfs,
                       output)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=step)
    thread.start()
    assert seen.wait(30)
    chroot.cancel()
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ExecCancelled)


def test_run_mounts_with_a_mount_namespace(busybox_rootfs, executor_scratch, tmp_path, no_step_leaks):
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("from the host\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    mounts = (BindMount(source, "/src"), BindMount(cache, "/cache", readonly=False),
              BindMount(secret, "/run/secrets/token", sealed=True), TmpfsMount("/scratch"))
    script = ("cat /src/file; touch /src/x 2>/dev/null || echo read-only; echo kept > /cache/out; "
              "cat /run/secrets/token; echo; echo gone > /scratch/f; hostname; echo $$")
    executor = ChrootExecutor(scratch=executor_scratch)
    out = run(executor, sh(script, mounts=mounts), busybox_rootfs)
    # the command is pid 2, after the helper's init, in a pid namespace of its own
    assert out.splitlines() == ["from the host", "read-only", "s3cret", "buildkitsandbox", "2"], out
    assert (cache / "out").read_text() == "kept\n"
    assert not (busybox_rootfs / "scratch").exists() and not (busybox_rootfs / "src").exists()


def test_network_none_has_only_loopback(busybox_rootfs, executor_scratch, no_step_leaks):
    executor = ChrootExecutor(scratch=executor_scratch)
    out = run(executor, sh("tail -n +3 /proc/net/dev | cut -d: -f1", network=NetworkMode.NONE), busybox_rootfs)
    assert out.split() == ["lo"]


def test_without_mounts_what_needs_them_is_refused(busybox_rootfs, executor_scratch, tmp_path, no_step_leaks):
    executor = ChrootExecutor(scratch=executor_scratch, namespaces=())
    before = tree_state(busybox_rootfs)
    with pytest.raises(SandboxFailed, match=r"RUN --mount \(/cache\) needs mount\(2\), which this process may not"):
        executor.run(sh("true", mounts=(BindMount(tmp_path, "/cache"),)), busybox_rootfs, lambda data: None)
    with pytest.raises(SandboxFailed, match="--network=none needs a network namespace"):
        executor.run(sh("true", network=NetworkMode.NONE), busybox_rootfs, lambda data: None)
    assert tree_state(busybox_rootfs) == before


# --- the real pybuild -----------------------------------------------------------

DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
ENV {mark}={value}
RUN echo x > /dev/null && test -c /dev/urandom && grep -q localhost /etc/hosts && id -u > /uid-root \\
 && mkdir -p /var/lib/x && touch /var/lib/x/f
USER app
RUN id > /tmp/uid-app && ! touch /etc/passwd 2>/dev/null
USER root
RUN rm /bin/sed && rm -r /home/app
"""

MOUNTS_DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
RUN --mount=type=bind,source=input.txt,target=/in.txt --mount=type=cache,target=/cache \\
    --mount=type=tmpfs,target=/scratch --mount=type=secret,id=token --mount=type=ssh \\
    test -S "$SSH_AUTH_SOCK" && \\
    test "$(cat /in.txt)" = input && test "$(cat /run/secrets/token)" = s3cret && echo c > /cache/c \\
    && echo t > /scratch/t && ! touch /in.txt 2>/dev/null
RUN --network=none test "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ')" = lo
RUN echo failing; exit 7
"""


def _context(tmp_path: Path, template: Path, dockerfile: str, mark: str = "") -> Path:
    """A context whose rootfs/ is the busybox rootfs (tests/runtime/conftest.py)."""
    context = tmp_path / f"context-{uuid.uuid4().hex[:8]}"
    shutil.copytree(template, context / "rootfs", symlinks=True)
    (context / "Dockerfile").write_text(dockerfile.format(mark=MARK, value=mark or "unused"))
    (context / "input.txt").write_text("input\n")
    return context


def _pybuild(*args: str) -> list[str]:
    return [sys.executable, "-m", "builder.cli", *args]


def _digest(layout: Path) -> str:
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def _env(tmp_path: Path, mark: str = "unused") -> dict:
    # No PYBUILD_SNAPSHOTTER: this host's /dev/fuse opens in the container
    # too, and the probe must find that fuse-overlayfs cannot mount there.
    return pybuild_env(tmp_path, SOURCE_DATE_EPOCH=EPOCH, **{MARK: mark})


def _build(tmp_path: Path, context: Path, isolation: str, name: str, contained: bool = False,
           *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    layout = tmp_path / f"layout-{name}"
    args = _pybuild("build", "--root", str(tmp_path / f"root-{name}"), "--progress", "plain", "--isolation",
                    isolation, "-o", f"type=oci,dest={layout},tar=false,rewrite-timestamp=true", *extra, str(context))
    env = _env(tmp_path) if contained else pybuild_env(tmp_path, SOURCE_DATE_EPOCH=EPOCH)
    result = subprocess.run(in_container(*args) if contained else args, capture_output=True, text=True, timeout=300,
                            cwd=SOURCE, env=env)
    return result, layout


def _mount_sources(tmp_path: Path) -> list[str]:
    """--secret and --ssh (an ssh-agent pybuild starts) for MOUNTS_DOCKERFILE."""
    require_tools("ssh-agent", "ssh-keygen", "ssh-add")
    key = tmp_path / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "token").write_text("s3cret")
    return ["--secret", f"id=token,src={tmp_path / 'token'}", "--ssh", f"default={key}"]


def test_build_with_run_mounts_network_none_and_a_failing_step(tmp_path, busybox_template):
    context = _context(tmp_path, busybox_template, MOUNTS_DOCKERFILE)
    result, _ = _build(tmp_path, context, "chroot", "mounts", False, *_mount_sources(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    # the first two steps ran; the third failed as the others say it
    assert "#4 DONE" in output and "#5 DONE" in output, output
    assert 'process "/bin/sh -c echo failing; exit 7" did not complete successfully: exit code: 7' in output
    assert "failing" in output


def test_unprivileged_container_builds_with_chroot_the_builtin_image(tmp_path, busybox_template):
    """The builtin sandbox on the host and chroot with copied snapshots in
    the container give the same image; there builtin and oci fail naming
    --isolation chroot, and a RUN --mount fails saying why."""
    context = _context(tmp_path, busybox_template, DOCKERFILE)
    host, host_layout = _build(tmp_path, context, "builtin", "host")
    assert host.returncode == 0, host.stderr
    inside, inside_layout = _build(tmp_path, context, "chroot", "contained", True)
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert _digest(inside_layout) == _digest(host_layout)
    probe = json.loads((tmp_path / "root-contained" / "snapshots" / ".overlay-probe").read_text())
    assert probe["overlay"] is False  # the mount was refused: the snapshots were copies
    fuse = json.loads((tmp_path / "root-contained" / "snapshots" / ".fuse-probe").read_text())
    assert "Operation not permitted" in fuse["why"]  # /dev/fuse opened, the mount did not

    for isolation in ("builtin", "oci"):
        refused, _ = _build(tmp_path, context, isolation, f"refused-{isolation}", True)
        assert refused.returncode == 1
        assert f"isolation {isolation} needs mount and pid namespaces" in refused.stderr, refused.stderr
        assert "use --isolation chroot" in refused.stderr

    mounts = _context(tmp_path, busybox_template, MOUNTS_DOCKERFILE)
    refused, _ = _build(tmp_path, mounts, "chroot", "refused-mounts", True, *_mount_sources(tmp_path))
    assert refused.returncode == 1
    assert "needs mount(2), which this process may not use" in refused.stderr, refused.stderr


def _marked(mark: str) -> dict[int, str]:
    needle = f"{MARK}={mark}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


@pytest.mark.parametrize("contained", [False, True], ids=["host", "container"])
def test_pybuild_killed_leaves_no_process_of_the_step(tmp_path, busybox_template, contained):
    """SIGKILL of pybuild while a step runs, after it daemonized a process
    in a session of its own: within a second nothing of the step lives.
    In the container there is no pid namespace: the lifeline does it."""
    mark = uuid.uuid4().hex
    dockerfile = ("FROM scratch\nCOPY rootfs/ /\nENV {mark}={value}\n"
                  "RUN setsid sh -c 'sleep 1000 & sleep 1000' & echo started; sleep 1000\n")
    context = _context(tmp_path, busybox_template, dockerfile, mark)
    args = _pybuild("build", "--root", str(tmp_path / "root"), "--progress", "plain", "--isolation", "chroot",
                    str(context))
    log = tmp_path / "log"
    with log.open("wb") as handle:
        build = subprocess.Popen(in_container(*args) if contained else args, stdout=handle, stderr=subprocess.STDOUT,
                                 cwd=SOURCE, env=_env(tmp_path, mark), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while b"started" not in log.read_bytes() or len(_marked(mark)) < 4:
            assert build.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=20)
    died = time.monotonic()
    while _marked(mark):
        assert time.monotonic() - died < 1.0, f"alive 1 s after pybuild died: {_marked(mark)}"
        time.sleep(0.02)
    # the next command on the root takes back what the dead one left
    cleaned = subprocess.run(_pybuild("doctor", "--root", str(tmp_path / "root")), capture_output=True, text=True,
                             timeout=120, cwd=SOURCE, env=_env(tmp_path))
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr


def test_the_steps_parents_hold_none_of_pybuilds_environment(busybox_rootfs, executor_scratch, monkeypatch,
                                                              no_step_leaks):
    """The helper and init run with an empty environment (buildah's
    CVE-2021-3602): without a pid namespace, /proc/PID/environ of the
    step's parents is what a step that leaves the chroot could read, with
    the same capabilities as theirs in a container."""
    monkeypatch.setenv("PYBUILD_TEST_CREDENTIAL", "hunter2")
    executor = ChrootExecutor(scratch=executor_scratch, namespaces=())
    environs: list[bytes] = []

    def output(data: bytes) -> None:
        if not environs:  # the step's $PPID is init, whose parent is the helper
            init = int(data.split()[0])
            stat = Path(f"/proc/{init}/stat").read_bytes()
            helper = int(stat[stat.rindex(b")") + 2:].split()[1])
            environs.extend(Path(f"/proc/{pid}/environ").read_bytes() for pid in (init, helper))

    executor.run(sh("echo $PPID; sleep 0.5"), busybox_rootfs, output)
    assert len(environs) == 2 and all(b"hunter2" not in environ for environ in environs), environs


def test_without_mounts_a_nodev_rootfs_is_refused(busybox_template, executor_scratch, tmp_path, no_step_leaks):
    """A nodev filesystem (a podman volume) cannot hold a usable /dev/null."""
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nodev", "tmpfs", str(volume)], check=True)
    try:
        rootfs = volume / "rootfs"
        shutil.copytree(busybox_template, rootfs, symlinks=True)
        executor = ChrootExecutor(scratch=executor_scratch, namespaces=())
        with pytest.raises(SandboxFailed, match="is on a filesystem mounted nodev .* put pybuild's root"):
            executor.run(sh("echo x > /dev/null"), rootfs, lambda data: None)
        # with a mount namespace the rootfs's own flags do not matter: /dev is a tmpfs
        assert run(ChrootExecutor(scratch=executor_scratch), sh("echo x > /dev/null && echo ok"), rootfs) == "ok\n"
    finally:
        subprocess.run(["umount", str(volume)], check=True)
