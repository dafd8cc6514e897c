"""What a RUN step sees and leaves behind, against BuildKit's behaviour.

Each expectation names where it comes from: current BuildKit's source
(moby/buildkit), runc's (the runtime BuildKit drives), or what docker
20.10's BuildKit printed for the same Dockerfile. None of these tests needs
docker: the expected results are written down here. Each build declares
`ARG ISOLATION`, so that the second executor does not reuse the first
one's cached steps. The same steps under the default isolation are also
recorded cases (testdata/compat: workdir-recreated-for-user,
instr-run-home-by-uid, instr-run-stdin-pipe,
instr-run-tree-removed-then-made-again); what stays here is per isolation
or needs what a case cannot give (a secret, the host's /proc/kcore).
"""

from __future__ import annotations

import os

import pytest

from e2e.helpers import ISOLATIONS, build_image
from runtime.prune import prune_unchanged_dirs

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_missing_workdir_is_created_for_the_user(tmp_path, root, busybox_image, isolation):
    # executor/runcexecutor/executor.go: a missing cwd is made with
    # user.MkdirAllAndChown(cwd, 0o755, uid, gid) of the step's user; docker
    # 20.10 showed "/x/y/z 1234:1234" and "/n 4242:5678" for the same steps.
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN echo 'u:x:1234:1234::/home/u:/bin/sh' >> /etc/passwd && mkdir /keep
WORKDIR /x/y/z
RUN rm -r /x
USER u
RUN [ "$(pwd)" = /x/y/z ]
USER root
WORKDIR /keep/n/m
RUN rm -r /keep/n
USER 4242:5678
RUN [ "$(pwd)" = /keep/n/m ]
USER root
RUN stat -c '%n %u:%g %a' /x /x/y /x/y/z /keep /keep/n /keep/n/m > /owners
""", isolation=isolation, export=False,
                        build_args={"ISOLATION": isolation})
    assert built.read_text("/owners").splitlines() == [
        "/x 1234:1234 755",
        "/x/y 1234:1234 755",
        "/x/y/z 1234:1234 755",
        "/keep 0:0 755",  # existing directories are left alone
        "/keep/n 4242:5678 755",
        "/keep/n/m 4242:5678 755",
    ]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_home_is_looked_up_by_uid(tmp_path, root, busybox_image, isolation):
    # BuildKit passes runc numeric ids (oci.WithUIDGID), and runc sets HOME
    # from the first passwd entry with that uid. The image already has
    # app:1000 (/home/app); docker 20.10 printed HOME=/home/app here.
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN echo 'appuser:x:1000:1000::/home/appuser:/bin/sh' >> /etc/passwd
USER appuser
RUN echo "$HOME" > /tmp/home
""", isolation=isolation, export=False,
                        build_args={"ISOLATION": isolation})
    assert built.read_text("/tmp/home") == "/home/app\n"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_generated_files_and_secrets_are_nosuid_nodev_noexec(tmp_path, root, busybox_image, isolation):
    # /etc/hosts and /etc/resolv.conf: executor/oci/spec_linux.go withROBind
    # ("nosuid", "noexec", "nodev", "rbind", "ro"); a secret:
    # solver/llbsolver/mounts/mount.go ("ro", "rbind", "nodev", "nosuid",
    # "noexec"). docker 20.10's mountinfo showed ro,nosuid,nodev,noexec on all three.
    secret = tmp_path / "script"
    secret.write_text("#!/bin/sh\necho ran\n")
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN --mount=type=secret,id=tok,mode=0755 \\
    for m in /etc/hosts /etc/resolv.conf /run/secrets/tok; do \\
      awk -v m=$m '$5 == m {{ print m, $6 }}' /proc/self/mountinfo; \\
    done > /flags; \\
    if /run/secrets/tok; then echo executed; else echo refused; fi > /exec 2>/dev/null
""", secrets=[f"id=tok,src={secret}"], isolation=isolation, export=False,
                        build_args={"ISOLATION": isolation})
    for line in built.read_text("/flags").splitlines():
        target, flags = line.split()
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(flags.split(",")), line
    assert len(built.read_text("/flags").splitlines()) == 3
    assert built.read_text("/exec") == "refused\n"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_stdin_is_an_empty_pipe(tmp_path, root, busybox_image, isolation):
    # runc (BuildKit's runtime) gives a step without a terminal pipes for its
    # stdio; nothing writes to stdin, so reads end at once. docker 20.10
    # showed "0 -> pipe:[...]" in /proc/self/fd.
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN if [ -p /dev/stdin ]; then echo pipe; else echo other; fi > /stdin; cat >> /stdin; echo "rc=$?" >> /stdin
""", isolation=isolation, export=False,
                        build_args={"ISOLATION": isolation})
    assert built.read_text("/stdin") == "pipe\nrc=0\n"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_dev_core_only_with_kcore(tmp_path, root, busybox_image, isolation):
    # runc's setupDevSymlinks adds /dev/core -> /proc/kcore only when the
    # host has /proc/kcore (docker 20.10 on a host without one had none).
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN if [ -L /dev/core ]; then echo yes; else echo no; fi > /core; ls /dev > /devs
""", isolation=isolation, export=False,
                        build_args={"ISOLATION": isolation})
    assert built.read_text("/core") == ("yes\n" if os.path.exists("/proc/kcore") else "no\n")
    for name in ("fd", "full", "mqueue", "null", "pts", "random", "shm", "stderr", "stdin", "stdout",
                 "tty", "urandom", "zero"):
        assert name in built.read_text("/devs").split()


def test_cgroupfs_is_mounted_under_oci(tmp_path, root, busybox_image):
    # executor/oci/spec_linux.go withCGroup: a read-only cgroup mount at
    # /sys/fs/cgroup (docker 20.10 showed the hierarchies there). The
    # builtin executor has no cgroup mount yet (see docs).
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN awk '$5 ~ "^/sys/fs/cgroup" {{ for (i = 7; $i != "-"; i++); print $5, $6, $(i + 1) }}' \
    /proc/self/mountinfo > /cg
""", isolation="oci", export=False)
    mounts = [line.split() for line in built.read_text("/cg").splitlines()]
    cgroups = [(target, flags) for target, flags, fstype in mounts if fstype in ("cgroup", "cgroup2")]
    assert cgroups, f"no cgroup filesystem under /sys/fs/cgroup: {mounts}"
    assert all("ro" in flags.split(",") for _, flags in cgroups), cgroups


def test_prune_keeps_dirs_below_an_opaque_dir(tmp_path):
    # An opaque upper directory hides everything below it in the lowers: an
    # empty directory under it is new, even when a lower holds an identical
    # one at the same path (overlayfs semantics; BuildKit's differ keeps it).
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "a" / "b" / "c").mkdir(parents=True)
    (upper / "a" / "b" / "c").mkdir(parents=True)
    os.setxattr(upper / "a", "trusted.overlay.opaque", b"y")
    for rel in ("a/b/c", "a/b", "a"):
        info = os.stat(lower / rel)
        os.utime(upper / rel, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert prune_unchanged_dirs(upper, [lower]) == 0
    assert (upper / "a" / "b" / "c").is_dir()
