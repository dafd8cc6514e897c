"""Executor behaviour, on real namespaces: the builtin executor, and runc and
crun through the OCI executor (`executor` fixture) — one contract, one suite.
Every test checks that no mount, process or executor_scratch dir is left behind."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from runtime.builtin import BuiltinExecutor
from runtime.errors import ExecFailed, UnknownUser
from runtime.executor import ExecCancelled
from runtime.spec import BindMount, ExecSpec, NetworkMode, TmpfsMount

pytestmark = pytest.mark.usefixtures("no_step_leaks")

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DOCKER_CAPS = "00000000a80425fb"


def sh(script: str, **kwargs) -> ExecSpec:
    kwargs.setdefault("env", (PATH,))
    return ExecSpec(("/bin/sh", "-c", script), **kwargs)


def run(executor, spec: ExecSpec, busybox_rootfs: Path) -> str:
    chunks: list[bytes] = []
    executor.run(spec, busybox_rootfs, chunks.append)
    return b"".join(chunks).decode()


def failure(executor, spec: ExecSpec, busybox_rootfs: Path) -> tuple[ExecFailed, str]:
    chunks: list[bytes] = []
    with pytest.raises(ExecFailed) as info:
        executor.run(spec, busybox_rootfs, chunks.append)
    return info.value, b"".join(chunks).decode()


# --- output and status ------------------------------------------------------


def test_output_is_streamed_as_it_arrives(executor, busybox_rootfs):
    arrivals: list[tuple[float, bytes]] = []
    executor.run(sh("echo first; sleep 0.5; echo second >&2"), busybox_rootfs, lambda data: arrivals.append((time.monotonic(), data)))
    text = b"".join(data for _, data in arrivals).decode()
    assert text == "first\nsecond\n"  # stderr shares the stream
    first = next(at for at, data in arrivals if b"first" in data)
    second = next(at for at, data in arrivals if b"second" in data)
    assert second - first >= 0.4


def test_exit_code_and_message(executor, busybox_rootfs):
    error, _ = failure(executor, sh("exit 3", env=()), busybox_rootfs)
    assert error.exit_code == 3
    assert str(error) == 'process "/bin/sh -c exit 3" did not complete successfully: exit code: 3'


def test_tail_keeps_the_last_twenty_lines(executor, busybox_rootfs):
    error, output = failure(executor, sh("seq 1 100; exit 1"), busybox_rootfs)
    assert output.splitlines()[-1] == "100"
    assert error.tail.splitlines() == [str(n) for n in range(81, 101)]


def test_death_by_signal(executor, busybox_rootfs):
    if isinstance(executor, BuiltinExecutor):
        error, _ = failure(executor, sh("kill -KILL $$"), busybox_rootfs)
        assert (error.exit_code, error.signal) == (137, signal.SIGKILL)
        assert str(error).endswith("did not complete successfully: killed by signal 9")
    else:
        # under runc, as in BuildKit, the step is pid 1 of its namespace and
        # cannot be killed from inside it: a child dies instead
        error, _ = failure(executor, sh("sh -c 'kill -KILL $$'; exit $?"), busybox_rootfs)
        assert error.exit_code == 137


def test_missing_executable(executor, busybox_rootfs):
    error, output = failure(executor, ExecSpec(("no-such-command",), env=(PATH,)), busybox_rootfs)
    assert "no-such-command" in output and "executable file not found in $PATH" in output
    if isinstance(executor, BuiltinExecutor):
        assert output == 'exec: "no-such-command": executable file not found in $PATH\n'
        assert error.exit_code == 127
    else:
        # The runtime logs to a file, as under BuildKit: its failure reaches
        # the step's output as one plain line, not a logrus record.
        assert "level=error" not in output and "time=" not in output, output
        assert error.exit_code == 1


def test_success_leaves_no_mount_point_stubs(executor, busybox_rootfs, tmp_path):
    (busybox_rootfs / "etc" / "hosts").unlink(missing_ok=True)
    source = tmp_path / "src"
    source.mkdir()
    spec = sh("true", mounts=(BindMount(source, "/mnt/deep/src"), TmpfsMount("/run/tmp")))
    before = sorted(str(p.relative_to(busybox_rootfs)) for p in busybox_rootfs.rglob("*"))
    run(executor, spec, busybox_rootfs)
    # /dev, /proc and /sys stay, as runc leaves them (BuildKit 0.13)
    kernel = [name for name in ("dev", "proc", "sys") if name not in before]
    assert sorted(str(p.relative_to(busybox_rootfs)) for p in busybox_rootfs.rglob("*")) == sorted(before + kernel)


# --- isolation --------------------------------------------------------------


def test_own_pid_namespace(executor, busybox_rootfs):
    pids = [name for name in run(executor, sh("ls /proc"), busybox_rootfs).split() if name.isdigit()]
    assert 0 < len(pids) <= 4


def test_hostname_and_hosts_file(executor, busybox_rootfs):
    output = run(executor, sh("hostname; cat /etc/hosts"), busybox_rootfs)
    assert output.splitlines()[0] == "buildkitsandbox"
    assert "127.0.0.1\tlocalhost buildkitsandbox" in output
    assert run(executor, sh("hostname", hostname="custom"), busybox_rootfs) == "custom\n"


def test_resolv_conf_comes_from_the_host(executor, busybox_rootfs):
    host = Path("/etc/resolv.conf").read_text()
    if any(line.split()[1].startswith("127.") for line in host.splitlines() if line.startswith("nameserver ")):
        pytest.skip("the host uses a local resolver")
    output = run(executor, sh("cat /etc/resolv.conf; { echo x >> /etc/resolv.conf; } 2>/dev/null || echo read-only"), busybox_rootfs)
    assert output.startswith(host.rstrip("\n"))
    assert output.endswith("read-only\n")


def test_network_none_sees_only_loopback(executor, busybox_rootfs):
    output = run(executor, sh("cat /proc/net/dev", network=NetworkMode.NONE), busybox_rootfs)
    interfaces = [line.split(":")[0].strip() for line in output.splitlines()[2:]]
    assert interfaces == ["lo"]
    up = run(executor, sh("ip link show lo", network=NetworkMode.NONE), busybox_rootfs)
    assert "UP" in up


def test_network_host_sees_the_host(executor, busybox_rootfs):
    output = run(executor, sh("cat /proc/net/dev"), busybox_rootfs)
    host = Path("/proc/net/dev").read_text()
    assert len(output.splitlines()) == len(host.splitlines())


def test_masked_paths(executor, busybox_rootfs):
    present = [path for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(path)]
    assert present, "no maskable path on this kernel"
    for path in present:
        assert run(executor, sh(f"wc -c < {path}"), busybox_rootfs).strip() == "0"
    if os.path.isdir("/sys/firmware"):
        assert run(executor, sh("ls -A /sys/firmware | wc -l"), busybox_rootfs).strip() == "0"


def test_sys_and_proc_sys_are_read_only(executor, busybox_rootfs):
    script = "touch /sys/x 2>/dev/null || echo sys-ro; { echo x > /proc/sys/kernel/hostname; } 2>/dev/null || echo procsys-ro"
    assert run(executor, sh(script), busybox_rootfs) == "sys-ro\nprocsys-ro\n"


def test_cannot_write_outside_rootfs(executor, busybox_rootfs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    # a symlink in the image pointing at the host's directory must resolve
    # inside the busybox_rootfs, both for the step and for its mount targets
    (busybox_rootfs / "escape").symlink_to(outside)
    source = tmp_path / "data"
    source.mkdir()
    spec = sh(
        f"echo x > /../../{outside.name}-marker; echo y > /escape/written; ls /escape/mounted",
        mounts=(BindMount(source, "/escape/mounted"),),
    )
    run(executor, spec, busybox_rootfs)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / f"{outside.name}-marker").exists()
    assert (busybox_rootfs / outside.relative_to("/") / "written").read_text() == "y\n"


def test_device_nodes_cannot_be_opened(executor, busybox_rootfs):
    # CAP_MKNOD is docker's: making a node works, opening a disk must not
    major = os.major(os.stat("/dev/null").st_rdev)
    output = run(executor, sh(f"mknod /tmp/mem c {major} 1 && (head -c1 /tmp/mem >/dev/null 2>&1 && echo opened || echo denied)"), busybox_rootfs)
    assert output == "denied\n"


def test_cannot_make_namespaces(executor, busybox_rootfs):
    output = run(executor, sh("unshare -u true 2>/dev/null && echo allowed || echo denied"), busybox_rootfs)
    assert output == "denied\n"


# --- users, env, cwd ---------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", "0 0 0"),
        ("root", "0 0 10"),  # the fixture lists root in group wheel
        ("app", "1000 1000 10 50"),
        ("1000", "1000 1000 10 50"),
        ("app:staff", "1000 50"),
        ("app:50", "1000 50"),
        ("1000:1000", "1000 1000"),
        ("2000", "2000 0"),
        ("daemon", "1 1 50"),
    ],
)
def test_user_forms(executor, busybox_rootfs, user, expected):
    output = run(executor, sh("echo $(id -u) $(id -g) $(id -G)", user=user), busybox_rootfs)
    uid, gid, *groups = output.split()
    want_uid, want_gid, *want_groups = expected.split()
    assert (uid, gid) == (want_uid, want_gid)
    # id -G lists the primary gid first, then the supplementary ones
    assert sorted(set(groups) - {gid}) == sorted(set(want_groups) - {want_gid})


def test_unknown_user(executor, busybox_rootfs):
    with pytest.raises(UnknownUser, match="unable to find user nosuch"):
        executor.run(sh("true", user="nosuch"), busybox_rootfs, lambda _: None)


def test_capabilities(executor, busybox_rootfs):
    root = run(executor, sh("grep -E '^Cap(Eff|Prm|Bnd|Inh)' /proc/self/status"), busybox_rootfs)
    caps = dict(line.split(":\t") for line in root.splitlines())
    assert caps == {"CapInh": "0" * 16, "CapPrm": DOCKER_CAPS, "CapEff": DOCKER_CAPS, "CapBnd": DOCKER_CAPS}
    app = run(executor, sh("grep -E '^Cap(Eff|Bnd)' /proc/self/status", user="app"), busybox_rootfs)
    assert dict(line.split(":\t") for line in app.splitlines()) == {"CapEff": "0" * 16, "CapBnd": DOCKER_CAPS}


def test_new_privileges_allowed_as_in_buildkit(executor, busybox_rootfs):
    assert run(executor, sh("grep NoNewPrivs /proc/self/status"), busybox_rootfs) == "NoNewPrivs:\t0\n"


def test_env_home_and_cwd(executor, busybox_rootfs):
    spec = sh("echo $FOO; echo $HOME; pwd", env=(PATH, "FOO=bar baz"), cwd="/work/dir")
    assert run(executor, spec, busybox_rootfs) == "bar baz\n/root\n/work/dir\n"
    assert (busybox_rootfs / "work" / "dir").is_dir()  # created, and kept, as BuildKit does
    assert run(executor, sh("echo $HOME", user="app"), busybox_rootfs) == "/home/app\n"
    assert run(executor, sh("echo $HOME", env=(PATH, "HOME=/x")), busybox_rootfs) == "/x\n"


def test_default_path_when_env_has_none(executor, busybox_rootfs):
    assert run(executor, ExecSpec(("echo", "hi"), env=()), busybox_rootfs) == "hi\n"


def test_umask_and_nofile(executor, busybox_rootfs):
    output = run(executor, sh("umask; ulimit -n"), busybox_rootfs)
    umask, nofile = output.split()
    assert umask == "0022"
    assert int(nofile) >= 1024


# --- mounts ------------------------------------------------------------------


def test_bind_mounts(executor, busybox_rootfs, tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in").write_text("from host\n")
    spec = sh(
        "cat /mnt/ro/in; { echo x > /mnt/ro/new; } 2>/dev/null || echo ro-refused; echo written > /mnt/rw/out",
        mounts=(BindMount(ro, "/mnt/ro"), BindMount(rw, "/mnt/rw", readonly=False)),
    )
    assert run(executor, spec, busybox_rootfs) == "from host\nro-refused\n"
    assert (rw / "out").read_text() == "written\n"
    assert sorted(os.listdir(ro)) == ["in"]


def test_bind_mount_of_a_file(executor, busybox_rootfs, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    spec = sh("cat /run/secrets/token", mounts=(BindMount(secret, "/run/secrets/token"),))
    assert run(executor, spec, busybox_rootfs) == "s3cret"
    assert not (busybox_rootfs / "run").exists()


def test_tmpfs_mount(executor, busybox_rootfs):
    spec = sh(
        "echo x > /cache/file && cat /cache/file; df -k /cache | tail -1",
        mounts=(TmpfsMount("/cache", size=4 * 1024 * 1024),),
    )
    lines = run(executor, spec, busybox_rootfs).splitlines()
    assert lines[0] == "x"
    assert lines[1].split()[1] == "4096"
    assert not (busybox_rootfs / "cache").exists()


# --- concurrency and cancellation --------------------------------------------


def test_concurrent_runs(executor, busybox_rootfs):
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            results[index] = run(executor, sh(f"sleep 0.5; echo {index}; hostname", hostname=f"h{index}"), busybox_rootfs)
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {index: f"{index}\nh{index}\n" for index in range(4)}
    assert time.monotonic() - started < 1.9  # they ran at the same time


def test_cancel_kills_the_step(executor, busybox_rootfs):
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            executor.run(sh("echo started; sleep 100"), busybox_rootfs, lambda data: started.set())
        except ExecCancelled as exc:
            outcome.append(exc)

    started = threading.Event()
    thread = threading.Thread(target=target)
    thread.start()
    assert started.wait(10)
    begun = time.monotonic()
    executor.cancel()
    thread.join(15)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ExecCancelled)
    assert time.monotonic() - begun < 5


def test_exception_from_output_kills_the_step(executor, busybox_rootfs):
    def output(data: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor.run(sh("echo go; sleep 100"), busybox_rootfs, output)


def test_keyboard_interrupt_while_waiting(executor, busybox_rootfs):
    main = threading.get_ident()
    timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    begun = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            executor.run(sh("sleep 100"), busybox_rootfs, lambda _: None)
    finally:
        timer.cancel()
    assert time.monotonic() - begun < 10


def test_overhead_of_true(executor, busybox_rootfs, record_property):
    spec = ExecSpec(("/bin/true",))
    executor.run(spec, busybox_rootfs, lambda _: None)  # warm the caches
    samples = []
    for _ in range(10):
        begun = time.perf_counter()
        executor.run(spec, busybox_rootfs, lambda _: None)
        samples.append(time.perf_counter() - begun)
    median = sorted(samples)[len(samples) // 2]
    record_property("true_median_ms", round(median * 1000, 1))
    print(f"{executor.name}: median {median * 1000:.1f} ms per `true`")
    assert median < 0.5  # generous: the number itself is what the report wants
