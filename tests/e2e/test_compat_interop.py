"""Interoperability of pybuild's outputs with the tools that consume them.

The image itself (config, history, files) of a Dockerfile like this one's
is compared with docker 26's in testdata/compat/interop-config-history
(tests/compat). What stays here is what such a record cannot show: the
export formats and what other tools make of them. What `docker load`
needs is encoded from its source (moby image/tarexport/load.go), and the
rest is read back by skopeo, umoci and oci-image-tool. What BuildKit
writes comes from its exporters (moby/buildkit exporter/oci/export.go,
through containerd's core/images/archive exporter)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from builder.build import build
from e2e.helpers import write_context
from fixtures.busybox import skopeo_inspect

EPOCH = 1_700_000_000
STAMP = "2023-11-14T22:13:20Z"
CREATED = "org.opencontainers.image.created"
IMAGE_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"

# Several layers, metadata-only steps between them and a RUN that changes
# nothing (BuildKit 0.13 keeps its empty layer: interop-config-history).
DOCKERFILE = """\
FROM {base}
ENV GREETING=hello PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
LABEL org.example.kind=interop
RUN mkdir -p /app && echo built > /app/out
WORKDIR /app
COPY input.txt /app/
RUN true
RUN echo "interop:x:1234:1234::/app:/bin/sh" >> /etc/passwd
USER interop
ENTRYPOINT ["/bin/sh", "-c", "echo $GREETING; cat /app/out", "entry"]
CMD ["arg"]
"""


def run(*command, **kwargs):
    done = subprocess.run(command, capture_output=True, timeout=120, **kwargs)
    assert done.returncode == 0, f"{command[0]} failed: {done.stderr.decode(errors='replace')}"
    return done


def _context(work: Path, base: str) -> Path:
    context = work / "context"
    write_context(context, {"Dockerfile": DOCKERFILE.format(base=base), "input.txt": "input\n"})
    return context


def _index_from_tar(path: Path) -> dict:
    with tarfile.open(path) as tar:
        return json.load(tar.extractfile("index.json"))


@pytest.fixture(scope="module")
def epoch_builds(busybox_image, tmp_path_factory):
    """The same inputs built twice, in fresh roots, with SOURCE_DATE_EPOCH and
    rewrite-timestamp, each into an OCI tar, a docker archive and an OCI
    directory."""
    work = tmp_path_factory.mktemp("interop")
    runs = []
    for n in range(2):
        here = work / f"b{n}"
        context = _context(here, busybox_image.ref)
        # A context file's mtime differs between checkouts.
        (context / "input.txt").touch()
        result = build(context, root=here / "root", build_args={"SOURCE_DATE_EPOCH": str(EPOCH)},
                       tags=["interop:1", "example.com/team/interop:2"],
                       outputs=[f"type=oci,dest={here / 'oci.tar'},rewrite-timestamp=true",
                                f"type=docker,dest={here / 'docker.tar'},rewrite-timestamp=true",
                                f"type=oci,dest={here / 'layout'},tar=false,rewrite-timestamp=true"])
        runs.append((here, result))
        time.sleep(1.1)  # a later second: nothing may depend on the clock
    yield runs
    shutil.rmtree(work, ignore_errors=True)


def test_layout_index_entries_carry_the_epoch_as_created(epoch_builds):
    # BuildKit's oci and docker exporters set org.opencontainers.image.created
    # on the manifest descriptor they put in index.json: SOURCE_DATE_EPOCH
    # when given, in Go's time.RFC3339 (whole seconds, "Z").
    here, _ = epoch_builds[0]
    indexes = [_index_from_tar(here / "oci.tar"), _index_from_tar(here / "docker.tar"),
               json.loads((here / "layout" / "index.json").read_text())]
    for index in indexes:
        assert len(index["manifests"]) == 2  # one entry per name, as containerd's exporter writes
        for entry in index["manifests"]:
            assert entry["annotations"][CREATED] == STAMP
        assert [e["annotations"][REF_NAME] for e in index["manifests"]] == ["1", "2"]
        assert [e["annotations"][IMAGE_NAME] for e in index["manifests"]] == [
            "docker.io/library/interop:1", "example.com/team/interop:2"]


def test_epoch_archives_are_byte_identical_across_fresh_roots(epoch_builds):
    (first, a), (second, b) = epoch_builds
    assert a.manifest_digest == b.manifest_digest
    for name in ("oci.tar", "docker.tar"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "layout/index.json").read_bytes() == (second / "layout/index.json").read_bytes()


def test_layout_created_without_epoch_is_the_export_time_and_a_given_one_wins(busybox_image, tmp_path,
                                                                              monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    context = _context(tmp_path, busybox_image.ref)
    before = int(time.time())
    build(context, root=tmp_path / "root", tags=["interop:1"],
          outputs=[f"type=oci,dest={tmp_path / 'oci.tar'}",
                   f"type=oci,dest={tmp_path / 'given'},tar=false,"
                   "annotation-manifest-descriptor.org.opencontainers.image.created=2001-02-03T04:05:06Z"])
    after = time.time()
    stamp = _index_from_tar(tmp_path / "oci.tar")["manifests"][0]["annotations"][CREATED]
    assert stamp.endswith("Z") and "." not in stamp  # RFC 3339 in whole seconds
    moment = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
    assert before <= moment <= after
    given = json.loads((tmp_path / "given" / "index.json").read_text())
    assert given["manifests"][0]["annotations"][CREATED] == "2001-02-03T04:05:06Z"
    # oci-image-tool checks the layout (annotations included) against the spec's schemas.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "oci.tar") as tar:
        tar.extractall(unpacked, filter="data")
    run("oci-image-tool", "validate", "--type", "image", "--ref", "name=1", str(unpacked))


def _layer_diff_id(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_docker_archive_is_what_docker_load_reads(epoch_builds, busybox_image):
    """The checks `docker load` makes (moby image/tarexport/load.go): each
    manifest.json item's Config and Layers are paths in the archive; the
    config's rootfs.diff_ids pair up with Layers, same count, each layer's
    uncompressed digest its diff_id; every RepoTags entry parses as a
    tagged familiar name."""
    here, result = epoch_builds[0]
    with tarfile.open(here / "docker.tar") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    items = json.loads(files["manifest.json"])
    assert len(items) == 1
    item = items[0]
    assert item["RepoTags"] == ["interop:1", "example.com/team/interop:2"]
    config = json.loads(files[item["Config"]])
    assert "sha256:" + hashlib.sha256(files[item["Config"]]).hexdigest() == result.image_id
    assert len(config["rootfs"]["diff_ids"]) == len(item["Layers"])
    assert [_layer_diff_id(files[path]) for path in item["Layers"]] == config["rootfs"]["diff_ids"]
    # `docker history` pairs the non-empty history entries with the layers
    # (which steps add one: the recorded interop-config-history case).
    history = config["history"]
    assert sum(1 for h in history if not h.get("empty_layer")) == len(item["Layers"])
    assert len(item["Layers"]) > len(busybox_image.layers)
    # skopeo's docker-archive transport reads manifest.json as docker does.
    info = skopeo_inspect(f"docker-archive:{here / 'docker.tar'}")
    assert info["Layers"] == config["rootfs"]["diff_ids"]


def test_pushed_image_runs_as_configured_after_skopeo_copy_and_umoci(epoch_builds, registry, tmp_path):
    """Push, copy back with skopeo (verifying every digest), unpack with umoci:
    the runtime config says what `docker run` would run. (The image config
    itself is compared with docker 26's in interop-config-history; this is
    the config as a runtime gets it after a registry round trip.)"""
    here, _ = epoch_builds[0]
    target = f"{registry.host}/interop/app:1"
    result = build(here / "context", root=here / "root", tags=[target], push=True)
    assert result.pushed[target] == skopeo_inspect(f"docker://{target}")["Digest"]
    layout = tmp_path / "layout"
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{target}", f"oci:{layout}:1")
    run("oci-image-tool", "validate", "--type", "image", "--ref", "name=1", str(layout))
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{layout}:1", str(bundle))
    process = json.loads((bundle / "config.json").read_text())["process"]
    assert process["args"] == ["/bin/sh", "-c", "echo $GREETING; cat /app/out", "entry", "arg"]
    assert process["cwd"] == "/app"
    assert (process["user"]["uid"], process["user"]["gid"]) == (1234, 1234)
    assert "GREETING=hello" in process["env"]
    assert (bundle / "rootfs/app/input.txt").read_text() == "input\n"
    shutil.rmtree(bundle)
