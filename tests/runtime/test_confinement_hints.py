"""What a container's confinement refuses names the relaxation rootless
BuildKit documents for it, instead of a bare "Operation not permitted":
the system calls are refused for real by a seccomp filter
(tests/fixtures/seccomp_jail.py), as a container's profile refuses them."""

from __future__ import annotations

import subprocess
import sys

from e2e.helpers import write_context
from fixtures.pybuild import SOURCE, pybuild_env
from fixtures.seccomp_jail import jailed


def _pybuild(*args: str) -> list[str]:
    return [sys.executable, "-m", "builder.cli", *args]


def test_a_refused_sethostname_names_seccomp(tmp_path, busybox_image):
    context = tmp_path / "ctx"
    write_context(context, {"Dockerfile": f"FROM {busybox_image.ref}\nRUN echo ran\n"})
    done = subprocess.run(jailed(*_pybuild("build", "--root", str(tmp_path / "root"), "--isolation", "builtin",
                                           "--progress", "plain", str(context)), refused=("sethostname",)),
                          capture_output=True, text=True, timeout=300, cwd=SOURCE, env=pybuild_env(tmp_path))
    assert done.returncode == 1, done.stderr
    assert "sethostname: Operation not permitted; a seccomp profile refuses it (a container's default): run it " \
           "with --security-opt seccomp=unconfined" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
