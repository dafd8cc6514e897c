"""Issue #4, end to end: how RUN runs — user, groups, working directory,
environment, exec form, failures, networking — with both executors
(pybuild's own namespaces and runc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from e2e.helpers import ISOLATIONS, BUILD_ERRORS, build_image
from builder.errors import StepFailed
from runtime.errors import ExecFailed

pytestmark = pytest.mark.e2e



@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_user_forms(tmp_path, root, busybox_image, isolation):
    build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN echo "staff:x:50:app" >> /etc/group && echo "audio:x:63:root,app" >> /etc/group
USER app
RUN set -e; [ "$(id -u):$(id -g)" = 1000:1000 ]; [ "$(id -G)" = "1000 50 63" ]; \\
    [ "$HOME" = /home/app ]; [ "$(id -un)" = app ]
USER 1000
RUN set -e; [ "$(id -un)" = app ]; [ "$(id -G)" = "1000 50 63" ]
USER app:staff
RUN set -e; [ "$(id -u):$(id -g)" = 1000:50 ]; [ "$(id -G)" = 50 ]
USER 1000:63
RUN set -e; [ "$(id -u):$(id -g)" = 1000:63 ]; [ "$(id -G)" = 63 ]
USER 4242
RUN set -e; [ "$(id -u):$(id -g)" = 4242:0 ]; [ "$HOME" = / ]
USER root
RUN set -e; [ "$(id -u):$(id -g)" = 0:0 ]; [ "$(id -G)" = "0 63" ]; [ "$HOME" = /root ]
""", isolation=isolation, export=False, local=False)

    for user, missing in (("nosuchuser", "user nosuchuser"), ("app:nosuchgroup", "group nosuchgroup")):
        with pytest.raises(BUILD_ERRORS, match=f"unable to find {missing}"):
            build_image(tmp_path, root, f"FROM {busybox_image.ref}\nUSER {user}\nRUN true\n",
                        isolation=isolation, export=False, local=False)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_environment_workdir_and_exec_form(tmp_path, root, busybox_image, isolation):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG BUILD_ARG=from-arg
ENV FROM_ENV="env value" PATH=/opt/bin:$PATH
WORKDIR /work/dir
RUN set -e; [ "$PWD" = /work/dir ]; [ "$(pwd)" = /work/dir ]; \\
    [ "$BUILD_ARG" = from-cli ]; [ "$FROM_ENV" = "env value" ]; \\
    [ "${{PATH%%:*}}" = /opt/bin ]; [ "$(hostname)" = buildkitsandbox ]; \\
    echo relative > out.txt
RUN ["/bin/sh", "-c", "echo \\"exec $0 $1 $FROM_ENV\\" > /work/dir/exec.txt", "zero", "one"]
""", build_args={"BUILD_ARG": "from-cli"}, isolation=isolation)
    assert built.read_text("/work/dir/out.txt") == "relative\n"
    assert built.read_text("/work/dir/exec.txt") == "exec zero one env value\n"
    assert "BUILD_ARG" not in built.env


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_failure_reports_exit_code_and_output(tmp_path, root, busybox_image, isolation):
    dockerfile = f"""\
FROM {busybox_image.ref}
RUN for i in $(seq 1 40); do echo "line $i"; done >&2; echo "to stderr" >&2; exit 7
"""
    with pytest.raises(StepFailed) as failed:
        build_image(tmp_path, root, dockerfile, isolation=isolation, export=False, local=False)
    error = failed.value.cause
    assert isinstance(error, ExecFailed)
    assert error.exit_code == 7
    assert "did not complete successfully: exit code: 7" in str(error)
    assert str(error).startswith('process "/bin/sh -c for i in')
    tail = error.tail.splitlines()
    # All on stderr: the order of writes to stdout and stderr is the
    # process's own business (busybox may buffer stdout under runc).
    assert tail[-2:] == ["line 40", "to stderr"]
    assert "line 1" not in tail  # only the last lines are kept

    # The pybuild command prints them too.
    context = tmp_path / "cli"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    done = subprocess.run([sys.executable, "-c", "from builder.cli import main; main()", "--root", str(root), "--isolation", isolation,
                           "--progress", "quiet", str(context)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    assert "exit code: 7" in done.stderr and "line 40" in done.stderr and "to stderr" in done.stderr


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_network_modes(tmp_path, root, busybox_image, isolation):
    host_netns = os.readlink("/proc/self/ns/net")
    dockerfile = f"""\
FROM {busybox_image.ref}
ARG N
RUN readlink /proc/self/ns/net > /host-ns
RUN --network=none readlink /proc/self/ns/net > /none-ns && \\
    tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /none-ifaces
RUN --network=host readlink /proc/self/ns/net > /explicit-host-ns
"""
    built = build_image(tmp_path, root, dockerfile, isolation=isolation, build_args={"N": isolation},
                        no_cache=True)
    assert built.read_text("/host-ns").strip() == host_netns
    assert built.read_text("/explicit-host-ns").strip() == host_netns
    assert built.read_text("/none-ns").strip() != host_netns
    assert built.read_text("/none-ifaces").split() == ["lo"]

    # --network none for the whole build: every RUN without its own flag.
    offline = build_image(tmp_path, root, dockerfile, isolation=isolation, network="none",
                          build_args={"N": isolation}, no_cache=True)
    assert offline.read_text("/host-ns").strip() != host_netns
    assert offline.read_text("/none-ns").strip() != host_netns
