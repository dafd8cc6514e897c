"""Issue 16: how a user's process becomes rootless. `python -m builder.cli`
enters the namespace as the console script does; the Python API, which may
run in a threaded program, does not, and opening a root then says so
instead of mounting outside any namespace (a fuse-overlayfs mount left in
the host's mount namespace was how that ended)."""

from __future__ import annotations

import json

from fixtures.rootless import PATH


def _as_user(rootless, *args: str):
    env = [f"HOME={rootless.home}", f"PATH={PATH}", "LANG=C.UTF-8", f"PYTHONPATH={rootless.host.source}"]
    return rootless.as_user("env", "-i", *env, rootless.host.python, *args, timeout=120)


def test_python_m_builder_cli_is_rootless_too(rootless):
    done = _as_user(rootless, "-m", "builder.cli", "info", "--format", "json")
    assert done.returncode == 0, done.stderr.decode()
    facts = json.loads(done.stdout)
    assert facts["rootless"].startswith("yes") and facts["snapshotter"] == "overlayfs"


def test_the_python_api_as_a_user_is_one_clear_error(rootless, busybox_image):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN true\n")
    code = ("from builder.build import build\n"
            "from builder.errors import HostError\n"
            "try:\n"
            f"    build({str(context)!r}, root={str(rootless.home / 'root')!r})\n"
            "except HostError as exc:\n"
            "    print('refused:', exc)\n")
    done = _as_user(rootless, "-c", code)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("refused: a rootless pybuild enters its own user namespace when it "
                                           "starts: run the pybuild command")
    assert not (rootless.home / "root").exists()
