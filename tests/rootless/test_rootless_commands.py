"""Issue 16: "every command works" for an ordinary user — the store's
commands on a pulled and a built image — and two of the user's builds at
once in one root (each pybuild has a mount namespace of its own, so neither
sees the other's mounts)."""

from __future__ import annotations

import json
import uuid

from fixtures.busybox import skopeo_inspect


def test_store_commands(rootless, busybox_image, registry):
    rootless.ok("pull", busybox_image.ref)
    inspected = json.loads(rootless.ok("inspect", busybox_image.ref).stdout)
    assert json.dumps(inspected).count(str(busybox_image.config)) >= 1, inspected

    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nRUN echo built > /built\n")
    rootless.ok("build", "-t", "local/app:1", str(context))
    pushed = f"{registry.host}/rootless/commands:{uuid.uuid4().hex[:12]}"
    rootless.ok("tag", "local/app:1", pushed)
    rootless.ok("push", pushed)
    local = json.loads(rootless.ok("inspect", pushed).stdout)
    # The store keeps layers uncompressed, the push compresses them: the
    # config is what both share.
    remote = skopeo_inspect(f"docker://{pushed}", raw=True)
    assert remote["config"]["digest"] == local["Manifest"]["config"]["digest"]

    history = rootless.ok("history", "local/app:1").stdout.decode()
    assert "echo built > /built" in history
    assert rootless.ok("du").stdout.strip()
    rootless.ok("rmi", "local/app:1", pushed)
    listed = rootless.ok("images").stdout.decode()
    assert "local/app:1" not in listed and pushed not in listed


def test_two_builds_at_once_in_one_root(rootless, busybox_image):
    contexts = [rootless.write_context(f"ctx{n}", f"FROM {busybox_image.ref}\n"
                                                  f"RUN sleep 1 && echo {n} > /n\nRUN cat /n > /copy\n")
                for n in (1, 2)]
    processes = [rootless.popen("build", "-o", f"type=local,dest={rootless.home / f'out{n}'}", str(context))
                 for n, context in enumerate(contexts, 1)]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode(errors="replace")
    for n in (1, 2):
        assert (rootless.home / f"out{n}" / "copy").read_text() == f"{n}\n"
    assert rootless.ok("doctor").returncode == 0
