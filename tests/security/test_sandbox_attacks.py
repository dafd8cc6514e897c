"""RUN isolation against hostile rootfs layouts, through real builds with
both executors: an image whose /proc, /sys or /dev is not a real directory,
and a step that replaces a mount point's parent with a symlink to a host
directory before pybuild removes the mount stubs. Each victim is a file or
directory of the test's own, outside the pybuild root; it is checked after
the build.

Never does a test write to /proc/sys or to any real host file: if the fix
failed, the step could reach the host's.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builder.solver.progress import BuildReporter
from e2e.helpers import BUILD_ERRORS, ISOLATIONS, build_image
from fixtures.pybuild import pybuild_env
from runtime import sandbox, sandbox_mounts
from security import hostile
from security.hostile import layer, member
from fixtures.victims import tree_state

_CLIMB = "../" * 40  # more `..` than any host path is deep: lands at the host's /


class _Output(BuildReporter):
    """Keeps what the steps printed (runc's own errors end up there)."""

    def __init__(self):
        super().__init__()
        self.data = bytearray()

    def output(self, vertex: str, data: bytes) -> None:
        self.data += data

    def text(self) -> str:
        return self.data.decode(errors="replace")


def _failure(tmp_path, dockerfile: str, isolation: str, **kwargs) -> str:
    """Build, expect a failure; its message and the steps' output."""
    output = _Output()
    with pytest.raises(BUILD_ERRORS) as failed:
        build_image(tmp_path, tmp_path / "root", dockerfile, isolation=isolation, export=False, local=False,
                    reporter=output, **kwargs)
    return f"{failed.value}\n{output.text()}"


# --- /proc, /sys and /dev must be real directories -------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize(("name", "fstype"), [("proc", "proc"), ("sys", "sysfs")])
def test_proc_or_sys_as_a_symlink_is_refused(tmp_path, busybox_image, isolation, name, fstype):
    # Followed, the symlink takes the kernel filesystem elsewhere: every mask
    # of /proc (or /sys) is skipped and /proc/sys is writable, i.e. the
    # host's kernel.core_pattern. runc refuses such a rootfs; so must we.
    archive = layer(member(name, tarfile.SYMTYPE, link=f"/tmp/{name}-elsewhere"))
    dockerfile = f"FROM {busybox_image.ref}\nADD evil.tar /\nRUN cat /proc/timer_list\n"
    message = _failure(tmp_path, dockerfile, isolation, files={"evil.tar": archive})
    if isolation == "builtin":
        assert f'filesystem "{fstype}" must be mounted on ordinary directory' in message
        assert "Traceback" not in message
    elif name == "proc":
        assert "must be mounted on ordinary directory" in message  # runc's words


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_dev_that_is_not_a_directory(tmp_path, busybox_image, isolation, kind):
    made = member("dev", data=b"not a directory\n") if kind == "file" else member(
        "dev", tarfile.SYMTYPE, link="/tmp/dev-elsewhere")
    dockerfile = f"FROM {busybox_image.ref}\nADD evil.tar /\nRUN cat /proc/timer_list\n"
    message = _failure(tmp_path, dockerfile, isolation, files={"evil.tar": layer(made)})
    if isolation == "builtin":
        assert 'rootfs at "/dev": filesystem "tmpfs" must be mounted on ordinary directory' in message


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_dev_climbing_out_to_a_host_null_never_reaches_it(tmp_path, registry, busybox_image, isolation):
    # The image's /dev climbs out of the rootfs into a directory whose `null`
    # is a symlink to a host file. A sandbox that joins root + "dev/null" as
    # a string binds that file, read-write, over the masked /proc files; runc
    # 1.1 follows it out too, making /dev's symlinks (fd, ptmx...) in the
    # host directory. pybuild refuses such a rootfs for both.
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    os.chmod(victim, 0o600)
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "null").symlink_to(victim)
    before = tree_state(sibling), os.lstat(victim)
    ref = hostile.push_image(registry, tmp_path / "layout", [layer(
        member("dev", tarfile.SYMTYPE, link=_CLIMB + str(sibling).lstrip("/")),
    )])
    dockerfile = (f"FROM {ref}\n"
                  "RUN echo pwned > /proc/timer_list; echo pwned > /proc/interrupts; cat /proc/timer_list\n")
    message = _failure(tmp_path, dockerfile, isolation)
    assert 'rootfs at "/dev": filesystem "tmpfs" must be mounted on ordinary directory' in message
    after = os.lstat(victim)
    assert victim.read_bytes() == b"host file\n"
    assert (after.st_mode, after.st_mtime_ns) == (before[1].st_mode, before[1].st_mtime_ns)
    assert tree_state(sibling) == before[0]


@pytest.mark.parametrize(("name", "fstype"), [("proc", "proc"), ("sys", "sysfs"), ("dev", "tmpfs")])
def test_the_sandbox_helper_refuses_by_itself(tmp_path, name, fstype):
    # A run checks the rootfs before it starts the helper (missing_paths);
    # the helper checks again, where it mounts. Run it on such a rootfs.
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / name).symlink_to(f"/tmp/{name}-elsewhere")
    etc = {}
    for file in ("hosts", "resolv.conf"):
        (tmp_path / file).write_text("")
        etc[file] = str(tmp_path / file)
    config = tmp_path / "config"
    config.write_bytes(marshal.dumps({
        "parent": os.getpid(), "rootfs": str(rootfs), "hostname": "h", "network_none": True, "etc": etc,
        "mounts": [], "args": ["true"], "env": [], "cwd": "/", "uid": 0, "gid": 0, "groups": [],
        "no_new_privs": False, "nofile": 0, "rlimits": [],
    }))
    status_read, status_write = os.pipe()
    helper = subprocess.Popen([sys.executable, "-S", "-E", sandbox.__file__, str(config), str(status_write)],
                              pass_fds=(status_write,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(status_write)
    with os.fdopen(status_read, "rb") as status:
        lines = status.read().decode().splitlines()
    output = helper.communicate(timeout=30)[0]
    assert helper.returncode != 0 and output == b""
    assert lines[-1] == f"error preparing the sandbox: {sandbox_mounts.not_ordinary_directory(name, fstype, fstype)}"
    assert not os.path.lexists(f"/tmp/{name}-elsewhere")


# --- no mount point inside /proc ------------------------------------------------------
#
# runc refuses a mount whose target leads inside /proc (checkProcMount), where
# it could cover what confines the step: /proc/self/attr (the LSM labels),
# the read-only /proc/sys. Both isolations refuse it before the step runs:
# the step's command would leave a file in a cache mount of its own.

_MARKED_RUN = "RUN --mount=type=cache,id=ran,target=/ran {mounts} touch /ran/step-ran\n"


def _step_ran(root: Path) -> bool:
    return any((root / "cachemounts").rglob("step-ran"))


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize(("name", "link", "lands"), [
    ("etc/hosts", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/core_pattern"),
    ("etc/hosts", "../proc/sys/kernel/core_pattern", "/proc/sys/kernel/core_pattern"),
    # through procfs's own `self` link: where the step's LSM label is set
    ("etc/resolv.conf", "/proc/self/attr/exec", "/attr/exec"),
])
def test_a_planted_symlink_never_takes_a_mount_inside_proc(tmp_path, busybox_image, isolation, name, link, lands):
    archive = layer(member("etc", tarfile.DIRTYPE, mode=0o755), member(name, tarfile.SYMTYPE, link=link))
    dockerfile = f"FROM {busybox_image.ref}\nADD evil.tar /\n" + _MARKED_RUN.format(mounts="")
    message = _failure(tmp_path, dockerfile, isolation, files={"evil.tar": archive})
    assert f'to rootfs at "/{name}": ' in message
    assert f'{lands}" cannot be mounted because it is inside /proc' in message
    assert "Traceback" not in message
    assert not _step_ran(tmp_path / "root")


@pytest.mark.parametrize(("isolation", "mount", "reason"), [
    *((isolation, mount, reason) for isolation in ISOLATIONS for mount, reason in (
        ("type=cache,target=/proc/pybuild-cache", '/proc/pybuild-cache" cannot be mounted because it is inside /proc'),
        ("type=bind,source=empty,target=/proc/self/attr/current", "cannot be mounted because it is inside /proc"),
    )),
    # runc checks a tmpfs too since 1.1.14 (CVE-2024-45310's rework of its
    # mount points); Debian 12's runc 1.1.5, which the oci isolation runs
    # here, lets one in, so these are builtin's alone
    ("builtin", "type=tmpfs,target=/proc/sys", '"/proc/sys" cannot be mounted because it is inside /proc'),
    ("builtin", "type=tmpfs,target=/proc", '"/proc" cannot be mounted because it is not of type proc'),
])
def test_a_step_mount_inside_proc_is_refused(tmp_path, busybox_image, isolation, mount, reason):
    dockerfile = f"FROM {busybox_image.ref}\n" + _MARKED_RUN.format(mounts=f"--mount={mount}")
    message = _failure(tmp_path, dockerfile, isolation, files={"empty": ""})
    target = mount.rpartition("target=")[2]
    assert f'to rootfs at "{target}": ' in message
    assert reason in message
    assert not _step_ran(tmp_path / "root")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_mounts_runc_allows_under_proc_and_sys(tmp_path, busybox_image, isolation):
    # lxcfs-style files under /proc, and anything under /sys, as runc allows
    dockerfile = (f"FROM {busybox_image.ref}\n"
                  "RUN --mount=type=bind,source=uptime,target=/proc/uptime "
                  "--mount=type=tmpfs,target=/sys/kernel/mm "
                  "cat /proc/uptime > /out && awk '$5 == \"/sys/kernel/mm\" {print $9}' /proc/self/mountinfo >> /out\n")
    built = build_image(tmp_path, tmp_path / "root", dockerfile, isolation=isolation, export=False,
                        files={"uptime": "42.00 7.00\n"})
    assert built.read_text("/out") == "42.00 7.00\ntmpfs\n"


# --- a mount point of the wrong type in the image ----------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize(("plant", "mount", "target", "builtin_reason"), [
    (member("etc/hosts", tarfile.DIRTYPE, mode=0o755), "", "/etc/hosts",
     '"/etc/hosts" is a directory in the image: a file cannot be mounted on it'),
    (member("etc/hosts", tarfile.SYMTYPE, link="/srv/dir"), "", "/etc/hosts",
     '"/srv/dir" is a directory in the image: a file cannot be mounted on it'),
    (None, "--mount=type=bind,source=dir,target=/etc/passwd", "/etc/passwd",
     '"/etc/passwd" is not a directory in the image: a directory cannot be mounted on it'),
    (None, "--mount=type=tmpfs,target=/etc/group", "/etc/group",
     '"/etc/group" is not a directory in the image: a tmpfs cannot be mounted on it'),
])
def test_a_mount_point_of_the_wrong_type_is_named(tmp_path, busybox_image, isolation, plant, mount, target,
                                                  builtin_reason):
    # An image whose /etc/hosts is a directory: runc (so BuildKit) fails the
    # step with mount(2)'s ENOTDIR, 'error mounting "<hosts file>" to rootfs
    # at "/etc/hosts": mount ...: not a directory'; builtin says which is
    # which, naming the path in the image.
    members = [member("etc", tarfile.DIRTYPE, mode=0o755), member("srv/dir", tarfile.DIRTYPE, mode=0o755)]
    members += [plant] if plant else []
    dockerfile = f"FROM {busybox_image.ref}\nADD evil.tar /\n" + _MARKED_RUN.format(mounts=mount)
    message = _failure(tmp_path, dockerfile, isolation, files={"evil.tar": layer(*members), "dir/f": "f\n"})
    assert 'error mounting "' in message and f'to rootfs at "{target}": ' in message
    if isolation == "builtin":
        assert builtin_reason in message
        assert "Errno" not in message and "/proc/self/fd" not in message
    else:
        assert "not a directory" in message
    assert not _step_ran(tmp_path / "root")


def test_the_cli_names_a_directory_where_the_image_needs_a_file(tmp_path, busybox_image):
    context = tmp_path / "context"
    context.mkdir()
    (context / "evil.tar").write_bytes(layer(member("etc/hosts", tarfile.DIRTYPE, mode=0o755)))
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nADD evil.tar /\nRUN true\n")
    result = subprocess.run(["pybuild", "build", "--root", str(tmp_path / "root"), "--isolation", "builtin",
                             "--progress", "plain", str(context)], capture_output=True, text=True, timeout=300,
                            env=pybuild_env(tmp_path))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and errors[0].endswith(
        'to rootfs at "/etc/hosts": "/etc/hosts" is a directory in the image: a file cannot be mounted on it')
    assert "Traceback" not in result.stderr


# --- masks in an ordinary build ------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_masked_and_read_only_paths(tmp_path, busybox_image, isolation):
    # Read only: busybox's `test -w` says yes to root whatever the mount, and
    # nothing here may write to a kernel file in case a mask is missing.
    script = ("for f in /proc/timer_list /proc/interrupts /proc/kcore /proc/keys; do "
              "[ -e $f ] && echo \"$f $(cat $f | wc -c)\" >> /out; done; "
              "ls -A /sys/firmware | wc -l >> /out; "
              "awk '$5 ~ /^\\/proc\\/(sys|sysrq-trigger|bus|fs|irq)$/ {print $5, substr($6, 1, 3)}' "
              "/proc/self/mountinfo | sort >> /out")
    built = build_image(tmp_path, tmp_path / "root",
                        f"FROM {busybox_image.ref}\nARG ISOLATION\nRUN {script}\n",
                        isolation=isolation, export=False, build_args={"ISOLATION": isolation})
    lines = built.read_text("/out").splitlines()
    masked = [f for f in ("/proc/timer_list", "/proc/interrupts", "/proc/kcore", "/proc/keys") if os.path.exists(f)]
    read_only = sorted(f"{p} ro," for p in ("/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq")
                       if os.path.exists(p))
    assert lines == [f"{f} 0" for f in masked] + ["0"] + read_only


# --- mount stub cleanup never follows a planted symlink ----------------------------


@pytest.fixture
def host_dir(tmp_path) -> Path:
    """A host directory holding empty files and directories, as the
    stubs pybuild removes after a RUN would be: every one must survive."""
    path = tmp_path / "host-dir"
    path.mkdir()
    for name in ("hosts", "resolv.conf", "f"):
        (path / name).touch()
    (path / "c").mkdir()
    (path / "keep").mkdir()
    return path


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_stub_cleanup_without_mounts_in_an_image_lacking_etc(tmp_path, busybox_image, host_dir, isolation):
    # /etc/hosts and /etc/resolv.conf are mount points; with no /etc in the
    # image, pybuild makes /etc and both files, and removes them after the
    # step. The step moves /etc away and puts a symlink to a host directory
    # in its place.
    before = tree_state(host_dir)
    dockerfile = (f"FROM {busybox_image.ref} AS tools\n"
                  "FROM scratch\n"
                  "COPY --from=tools /bin /bin\n"
                  f"RUN mv /etc /moved-etc && ln -s {host_dir} /etc\n")
    built = build_image(tmp_path, tmp_path / "root", dockerfile, isolation=isolation, export=False)
    assert tree_state(host_dir) == before
    assert os.readlink(built.path("/etc")) == str(host_dir)
    # moved by the step, the stubs are its own files now: they stay
    assert sorted(os.listdir(built.path("/moved-etc"))) == ["hosts", "resolv.conf"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_stub_cleanup_with_mounts(tmp_path, busybox_image, host_dir, isolation):
    before = tree_state(host_dir)
    dockerfile = (f"FROM {busybox_image.ref}\n"
                  "RUN --mount=type=tmpfs,target=/a/b/c --mount=type=bind,source=empty,target=/a/b/f "
                  f"mv /a/b /a/moved && ln -s {host_dir} /a/b\n")
    built = build_image(tmp_path, tmp_path / "root", dockerfile, isolation=isolation, export=False,
                        files={"empty": ""})
    assert tree_state(host_dir) == before
    assert os.readlink(built.path("/a/b")) == str(host_dir)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_stubs_are_removed_when_left_alone(tmp_path, busybox_image, isolation):
    dockerfile = (f"FROM {busybox_image.ref} AS tools\n"
                  "FROM scratch\n"
                  "COPY --from=tools /bin /bin\n"
                  "RUN --mount=type=tmpfs,target=/a/b/c --mount=type=bind,from=tools,source=/etc/passwd,target=/x/p "
                  "test -d /a/b/c && test -s /x/p && test -f /etc/hosts\n")
    built = build_image(tmp_path, tmp_path / "root", dockerfile, isolation=isolation, export=False)
    # /dev, /proc and /sys stay, as in BuildKit 0.13 (testdata/compat/run-minimal-rootfs)
    assert sorted(os.listdir(built.rootfs)) == ["bin", "dev", "proc", "sys"]


# --- reading the image's /etc/passwd and /etc/group --------------------------------


@pytest.mark.parametrize("plant", ["host-symlink", "fifo", "device"])
def test_user_lookup_reads_only_regular_files_of_the_image(tmp_path, busybox_image, plant):
    host_passwd = tmp_path / "host-passwd"
    host_passwd.write_text("hostuser:x:4242:4242::/:/bin/sh\n")
    make = {
        "host-symlink": f"ln -sf {host_passwd} /etc/passwd",
        "fifo": "rm /etc/passwd && mkfifo /etc/passwd",
        "device": "rm /etc/passwd && mknod /etc/passwd c 1 5",
    }[plant]
    dockerfile = f"FROM {busybox_image.ref}\nRUN {make}\nUSER hostuser\nRUN true\n"
    message = _failure(tmp_path, dockerfile, "builtin")
    assert "unable to find user hostuser" in message
