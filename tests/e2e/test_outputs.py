"""Issue 6: every output type and its options, from one real build, read
back by independent tools (skopeo, umoci + runc, oci-image-tool, dockerd)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from builder.build import build
from builder.errors import PybuildError
from builder.export.assemble import load_image
from builder.image import (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP,
                           OCI_LAYER_ZSTD, OCI_MANIFEST)
from builder.root.worker import Worker
from fixtures.busybox import skopeo_inspect
from fixtures.tools import require_tools

DOCKERFILE = """\
FROM {base}
RUN echo hello > /greeting && mkdir /d && echo x > /d/x
COPY <<EOF /etc/note
a note
EOF
CMD ["cat", "/greeting"]
"""


def run(*command, **kwargs):
    done = subprocess.run(command, capture_output=True, timeout=120, **kwargs)
    assert done.returncode == 0, f"{command[0]} failed: {done.stderr.decode(errors='replace')}"
    return done


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def layout_manifest(layout: Path) -> tuple[dict, dict]:
    index = json.loads((layout / "index.json").read_text())
    return index, json.loads(blob(layout, index["manifests"][0]["digest"]))


@pytest.fixture(scope="module")
def built(busybox_image, registry, tmp_path_factory):
    """One build, eight outputs."""
    work = tmp_path_factory.mktemp("outputs")
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_image.ref))
    pushed_name = f"{registry.host}/outputs/app:1"
    outputs = [
        f"type=oci,dest={work / 'oci.tar'},name=example.com/app:1",
        f"type=oci,dest={work / 'zstd'},tar=false,compression=zstd,force-compression=true,"
        "annotation.org.opencontainers.image.title=app,annotation-index.com.example.index=yes,"
        "annotation-manifest-descriptor.com.example.desc=yes",
        f"type=docker,dest={work / 'docker.tar'},name=app:1",
        f"type=oci,dest={work / 'dockertypes'},tar=false,oci-mediatypes=false,compression=uncompressed",
        f"type=local,dest={work / 'rootfs'}",
        f"type=tar,dest={work / 'rootfs.tar'}",
        f"type=registry,name={pushed_name}",
        "type=image,name=localapp:1",
    ]
    result = build(context, root=work / "root", outputs=outputs, tags=["tagged:1"],
                   labels={"com.example.label": "yes"}, annotations={"com.example.build": "yes"})
    yield work, result, pushed_name
    shutil.rmtree(work, ignore_errors=True)


def test_oci_tar_and_pushed_image_read_by_skopeo(built):
    work, result, pushed_name = built
    info = skopeo_inspect(f"oci-archive:{work / 'oci.tar'}:1")
    assert info["Digest"] == result.manifest_digest  # the first output is the build's image
    assert info["Labels"]["com.example.label"] == "yes"
    remote = skopeo_inspect(f"docker://{pushed_name}")
    assert remote["Digest"] == result.manifest_digest == result.pushed[pushed_name]
    raw = skopeo_inspect(f"docker://{pushed_name}", raw=True)
    assert raw["mediaType"] == OCI_MANIFEST
    assert raw["annotations"] == {"com.example.build": "yes"}
    # skopeo copies the archive (verifying every blob's digest) to a fresh layout.
    run("skopeo", "copy", "--quiet", f"oci-archive:{work / 'oci.tar'}:1", f"oci:{work / 'copy'}:1")
    assert skopeo_inspect(f"oci:{work / 'copy'}:1")["Digest"] == result.manifest_digest
    # oci-image-tool (image-spec 1.0, no zstd) checks the gzip layout against the spec's schemas.
    unpacked = work / "oci-unpacked"
    with tarfile.open(work / "oci.tar") as tar:
        tar.extractall(unpacked, filter="data")
    run("oci-image-tool", "validate", "--type", "image", "--ref", "name=1", str(unpacked))


def test_zstd_output_has_its_own_manifest_and_annotations(built, busybox_image):
    work, result, _ = built
    index, manifest = layout_manifest(work / "zstd")
    assert index["annotations"] == {"com.example.index": "yes"}
    assert index["manifests"][0]["annotations"]["com.example.desc"] == "yes"
    assert manifest["annotations"] == {"com.example.build": "yes", "org.opencontainers.image.title": "app"}
    # force-compression recompressed even the base image's gzip layer.
    assert {layer["mediaType"] for layer in manifest["layers"]} == {OCI_LAYER_ZSTD}
    assert index["manifests"][0]["digest"] != result.manifest_digest
    config = json.loads(blob(work / "zstd", manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"][0] == str(busybox_image.diff_ids[0])
    run("skopeo", "copy", "--quiet", f"oci:{work / 'zstd'}", f"oci:{work / 'zstd-copy'}:x")


def test_docker_media_types(built):
    work, _, _ = built
    _, manifest = layout_manifest(work / "dockertypes")
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    # compression=uncompressed without force: the base layer keeps its gzip blob.
    types = [layer["mediaType"] for layer in manifest["layers"]]
    assert types[0] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert set(types[1:]) == {DOCKER_LAYER}
    assert "annotations" not in manifest
    info = skopeo_inspect(f"oci:{work / 'dockertypes'}")
    assert len(info["Layers"]) == 3


def test_docker_archive_defaults_to_docker_media_types(built):
    work, _, _ = built
    with tarfile.open(work / "docker.tar") as tar:
        manifest_json = json.load(tar.extractfile("manifest.json"))
        index = json.load(tar.extractfile("index.json"))
        manifest = json.load(tar.extractfile(f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"))
    assert manifest_json[0]["RepoTags"] == ["app:1"]
    assert manifest["mediaType"] == DOCKER_MANIFEST
    info = skopeo_inspect(f"docker-archive:{work / 'docker.tar'}")
    assert info["Labels"]["com.example.label"] == "yes"


def test_rootfs_outputs(built):
    work, _, _ = built
    assert (work / "rootfs/greeting").read_text() == "hello\n"
    assert (work / "rootfs/etc/note").read_text() == "a note\n"
    assert (work / "rootfs/bin/busybox").is_file()
    with tarfile.open(work / "rootfs.tar") as tar:
        assert tar.extractfile("d/x").read() == b"x\n"


def test_image_outputs_name_the_local_store(built):
    work, result, _ = built
    worker = Worker.open(work / "root", "builtin")
    try:
        names = {name: digest for name, digest, _ in worker.index.images()}
        stored = load_image(worker.store, names["docker.io/library/localapp:1"])
    finally:
        worker.close()
    # type=image names its own name= only; -t tags go with it when it has none.
    # Same image (config) as the other outputs; its new layers are stored
    # uncompressed, so its manifest is its own.
    assert stored.config.digest == result.image.config.digest
    assert all(layer.media_type == OCI_LAYER for layer in stored.layers[1:])
    assert "docker.io/library/tagged:1" not in names


def test_umoci_unpack_and_runc_run_the_cmd(built, tmp_path):
    work, _, _ = built
    bundle = tmp_path / "bundle"
    # Debian's umoci reads gzip layers only: unpack the default (gzip) output.
    run("skopeo", "copy", "--quiet", f"oci-archive:{work / 'oci.tar'}:1", f"oci:{tmp_path / 'layout'}:1")
    run("umoci", "unpack", "--image", f"{tmp_path / 'layout'}:1", str(bundle))
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["cat", "/greeting"]
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    done = run("runc", "--root", str(tmp_path / "runc"), "run", "--bundle", str(bundle),
               f"pybuild-test-{os.getpid()}")
    assert done.stdout == b"hello\n"
    shutil.rmtree(bundle)


@pytest.fixture
def dockerd(tmp_path):
    """A real dockerd of our own on a unix socket under tmp_path."""
    require_tools("dockerd", "docker")
    home = Path(f"/tmp/pb-dockerd-{os.getpid()}")  # short: unix socket paths are limited
    home.mkdir()
    socket = home / "d.sock"
    log = open(tmp_path / "dockerd.log", "wb")
    process = subprocess.Popen(
        ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "--data-root", str(home / "data"),
         "--exec-root", str(home / "exec"), "--pidfile", str(home / "pid"), "-H", f"unix://{socket}"],
        stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = socket.exists() and subprocess.run(
                ["docker", "-H", f"unix://{socket}", "version"], capture_output=True, timeout=30).returncode == 0
            if ready:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"dockerd cannot start here: {(tmp_path / 'dockerd.log').read_text()[-500:]}")
            time.sleep(0.3)
        yield f"unix://{socket}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_docker_load_in_a_real_dockerd(built, dockerd):
    work, _, _ = built
    docker = ["docker", "-H", dockerd]
    done = run(*docker, "load", "-i", str(work / "docker.tar"))
    assert b"app:1" in done.stdout
    inspect = json.loads(run(*docker, "image", "inspect", "app:1").stdout)[0]
    assert inspect["Config"]["Cmd"] == ["cat", "/greeting"]
    assert inspect["Config"]["Labels"]["com.example.label"] == "yes"


@pytest.mark.parametrize("output, message", [
    ("type=oci,dest=x.tar,compression=zstd,oci-mediatypes=false", "zstd needs OCI media types"),
    ("type=oci,dest=x.tar,compression=brotli", "expected gzip, zstd or uncompressed"),
    ("type=oci,dest=x.tar,compression-level=99", "out of range"),
    ("type=oci,dest=x.tar,colour=blue", "unknown option 'colour'"),
    ("type=local,dest=x,compression=gzip", "does not take compression"),
])
def test_invalid_output_options(built, busybox_image, tmp_path, output, message):
    work, _, _ = built
    with pytest.raises(PybuildError, match=message):
        build(work / "context", root=work / "root", outputs=[output.replace("x", str(tmp_path / "x"), 1)])
    assert not (tmp_path / "x.tar").exists()


SQUASH_DOCKERFILE = """\
FROM {base}
RUN mkdir -p /d /gone && echo 1 > /d/a && echo 2 > /d/b && echo x > /gone/x && echo keep > /keep
RUN rm /d/a && rm -rf /gone && rm /bin/true && echo 3 > /d/c
RUN rm -rf /d && mkdir /d && echo new > /d/only && ln /keep /keep-link
"""


def test_squash_merges_the_new_layers_into_one(busybox_image, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(SQUASH_DOCKERFILE.format(base=busybox_image.ref))
    root = tmp_path / "root"
    layout, rootfs = tmp_path / "layout", tmp_path / "rootfs"
    build(context, root=root, squash=True, outputs=[f"type=oci,dest={layout},tar=false"])
    index, manifest = layout_manifest(layout)
    assert len(manifest["layers"]) == len(busybox_image.layers) + 1
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    new_history = config["history"][-4:]
    assert [h.get("empty_layer", False) for h in new_history] == [True, True, True, False]
    assert new_history[-1]["comment"] == "squashed"
    with tarfile.open(layout / "blobs/sha256" / manifest["layers"][-1]["digest"][7:]) as tar:
        members = {m.name: m for m in tar.getmembers()}
    # /gone came and went inside the squashed layers: none of its files is
    # left, only a whiteout (harmless: the merge does not look into the base);
    # /bin/true came from the base: its whiteout stays; /d was replaced: opaque.
    assert not any(name.startswith("gone") for name in members)
    assert "bin/.wh.true" in members
    assert {name for name in members if name.startswith("d/")} == {"d/.wh..wh..opq", "d/only"}
    assert members["keep-link"].islnk() and members["keep-link"].linkname == "keep"

    # The merged result is what the unsquashed image shows, by umoci and runc's view of it.
    run("skopeo", "copy", "--quiet", f"oci:{layout}", f"oci:{tmp_path / 'copy'}:1")
    run("umoci", "unpack", "--image", f"{tmp_path / 'copy'}:1", str(tmp_path / "bundle"))
    files = tmp_path / "bundle" / "rootfs"
    assert sorted(p.name for p in (files / "d").iterdir()) == ["only"]
    assert not (files / "gone").exists() and not (files / "bin/true").exists()
    assert (files / "keep-link").read_text() == "keep\n"
    assert (files / "bin/busybox").is_file()
    shutil.rmtree(tmp_path / "bundle")
