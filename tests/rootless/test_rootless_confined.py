"""Issue 16, in a container's confinement: what refuses a step names the
relaxation rootless BuildKit documents for it. Reproduced without a
container: a mount namespace of root's with a path of /proc covered (as
docker and podman mask /proc/keys and others) around the user's pybuild,
whose own namespaces then inherit that mount locked; and a seccomp filter
refusing unshare (tests/fixtures/seccomp_jail.py)."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from fixtures.seccomp_jail import jailed


@pytest.mark.parametrize("isolation", ("builtin", "oci"))
def test_a_masked_proc_names_the_relaxation(rootless, busybox_image, isolation):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN echo ran\n")
    user_command = " ".join(map(shlex.quote, rootless.command("build", "--isolation", isolation, "--progress",
                                                              "plain", str(context))))
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount --bind /dev/null /proc/keys && {user_command}"],
                          capture_output=True, text=True, timeout=120, cwd=rootless.home)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, done.stderr
    assert "/proc: " in errors[0] and "a fresh /proc cannot be mounted where the container's /proc has " \
        "masked paths: run it with --security-opt systempaths=unconfined (docker)" in errors[0], done.stderr


def test_refused_user_namespaces_name_seccomp(rootless):
    """docker's default profile refuses unshare(CLONE_NEWUSER) to a
    container's non-root user: pybuild says so, and what to run it with."""
    done = subprocess.run(jailed(*rootless.command("info"), refused=("unshare",)), capture_output=True, text=True,
                          timeout=120, cwd=rootless.home)
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert done.returncode == 1, done.stderr
    assert len(errors) == 1 and "unshare: Operation not permitted: user namespaces are refused here; in a " \
        "container, its default seccomp profile refuses them (run it with --security-opt seccomp=unconfined" \
        in errors[0], done.stderr


def test_chroot_takes_the_containers_proc_where_a_fresh_one_is_refused(rootless, busybox_image):
    """--isolation chroot, the weaker one (docs/isolation.md), binds the
    /proc it sees instead (BuildKit's --oci-worker-no-process-sandbox): the
    build succeeds, and its image is the one builtin makes unconfined."""
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN echo ran > /ran && test -r /proc/self/status\n")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    out = rootless.mkdir("out")

    def output(name: str) -> str:
        return f"type=oci,dest={out / name},tar=false,rewrite-timestamp=true"

    user_command = " ".join(map(shlex.quote, rootless.command("build", "--isolation", "chroot", "-o",
                                                              output("chroot"), str(context), env=env)))
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"mount --bind /dev/null /proc/keys && {user_command}"],
                          capture_output=True, text=True, timeout=120, cwd=rootless.home)
    assert done.returncode == 0, done.stderr
    rootless.ok("build", "--isolation", "builtin", "-o", output("builtin"), str(context), env=env)
    digests = [json.loads((out / name / "index.json").read_text())["manifests"][0]["digest"]
               for name in ("chroot", "builtin")]
    assert digests[0] == digests[1]
