"""Issue 6: the local store commands, through the real `pybuild` command:
images, inspect, history, tag, rmi, push, pull."""

from __future__ import annotations

import json
import subprocess

from builder.root.worker import Worker
from fixtures.busybox import skopeo_inspect


def pybuild(*args, root, check: bool = True):
    done = subprocess.run(["pybuild", *args, "--root", str(root)], capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def test_store_commands(busybox_image, registry, tmp_path):
    root = tmp_path / "root"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN echo hi > /hi\nCMD [\"cat\", \"/hi\"]\n")
    pybuild("build", "-t", "store-app:1", "--iidfile", str(tmp_path / "iid"), str(context), root=root)
    image_id = (tmp_path / "iid").read_text()

    listed = pybuild("images", root=root).stdout
    assert "docker.io/library/store-app:1" in listed and image_id[7:19] in listed

    inspect = json.loads(pybuild("inspect", "store-app:1", root=root).stdout)
    assert inspect["Id"] == image_id
    assert inspect["Config"]["config"]["Cmd"] == ["cat", "/hi"]
    by_id = json.loads(pybuild("inspect", image_id[7:19], root=root).stdout)
    assert by_id["Digest"] == inspect["Digest"]

    history = pybuild("history", "store-app:1", root=root).stdout.splitlines()
    assert history[0].startswith("CREATED")
    assert "CMD" in history[1] and "RUN /bin/sh -c echo hi > /hi" in history[2]

    remote = f"{registry.host}/store/app:2"
    pybuild("tag", "store-app:1", remote, root=root)
    assert remote in pybuild("images", root=root).stdout
    pushed = pybuild("push", remote, root=root).stdout
    pushed_digest = pushed.strip().rsplit("digest: ", 1)[1]
    remote_info = skopeo_inspect(f"docker://{remote}")
    assert remote_info["Digest"] == pushed_digest
    # The store keeps new layers uncompressed; the registry gets them gzipped,
    # under the same config (image ID).
    raw = skopeo_inspect(f"docker://{remote}", raw=True)
    assert raw["config"]["digest"] == image_id
    assert all(layer["mediaType"].endswith("+gzip") for layer in raw["layers"])
    # The RUN layer was gzipped straight from its snapshot: its uncompressed
    # bytes were never written, and the fresh pull below checks the diff_ids.
    worker = Worker.open(root)
    try:
        assert len(list(worker.store.lazy_digests())) == 1
    finally:
        worker.close()

    untagged = pybuild("rmi", "store-app:1", root=root).stdout
    assert "Untagged: docker.io/library/store-app:1" in untagged
    assert "store-app:1" not in pybuild("images", root=root).stdout
    missing = pybuild("inspect", "store-app:1", root=root, check=False)
    assert missing.returncode == 1 and "image not found: store-app:1" in missing.stderr
    again = pybuild("rmi", "store-app:1", root=root, check=False)
    assert again.returncode == 1 and "image not found" in again.stderr

    # pull into a fresh root: the same image under its name.
    fresh = tmp_path / "fresh"
    pulled = pybuild("pull", remote, root=fresh).stdout
    assert f"digest: {pushed_digest}" in pulled
    assert json.loads(pybuild("inspect", remote, root=fresh).stdout)["Id"] == image_id


def test_pull_reads_platform_as_a_build_does(busybox_index, tmp_path):
    """`--platform aarch64` is linux/arm64, as in FROM --platform (one parser)."""
    pulled = pybuild("pull", "--platform", "aarch64", busybox_index.ref, root=tmp_path / "root").stdout
    assert f"digest: {busybox_index.arm64}" in pulled
    bad = pybuild("pull", "--platform", "linux//arm", busybox_index.ref, root=tmp_path / "root", check=False)
    assert bad.returncode == 1 and "invalid platform" in bad.stderr and "Traceback" not in bad.stderr
