"""Issue 16: RUN resource limits as an ordinary user. Without a cgroup the
user may write (a v2 subtree systemd delegated), both executors fail before
the step with one line that says so; with one, the limit applies."""

from __future__ import annotations

import pytest


def _own_cgroup_writable(rootless) -> bool:
    done = rootless.as_user("sh", "-c", 'd=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup); '
                                        'test -w "$d/cgroup.subtree_control"')
    return done.returncode == 0


@pytest.mark.parametrize("isolation", ("oci", "builtin"))
def test_memory_limit_is_applied_or_refused_clearly(rootless, busybox_image, isolation):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN echo limited\n")
    done = rootless.run("build", "--isolation", isolation, "--memory", "256m", "--progress", "plain", str(context))
    stderr = done.stderr.decode(errors="replace")
    if _own_cgroup_writable(rootless):
        assert done.returncode == 0, stderr
        return
    assert done.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "a rootless pybuild can limit RUN only inside a cgroup v2 subtree delegated" \
        in errors[0], stderr
    assert "runc run failed" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("isolation", ("oci", "builtin", "chroot"))
def test_a_hard_ulimit_above_the_users_is_refused_before_the_step(rootless, busybox_image, isolation):
    hard = int(rootless.as_user("sh", "-c", "ulimit -Hn").stdout)
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN ulimit -Hn > /hard\n")
    done = rootless.run("build", "--isolation", isolation, "--ulimit", f"nofile=1024:{hard + 1}", "--progress",
                        "plain", str(context))
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --ulimit nofile: a hard limit of {hard + 1} is above this user's own ({hard}), "
                      "which a rootless pybuild cannot raise"], stderr
    out = rootless.mkdir("out")
    rootless.ok("build", "--isolation", isolation, "--ulimit", f"nofile=1024:{hard}", "-o",
                f"type=local,dest={out / 'fs'}", str(context))
    assert (out / "fs" / "hard").read_text().strip() == str(hard)
