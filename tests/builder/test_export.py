"""Exporters, checked by independent readers: skopeo, umoci, oci-image-tool."""

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from types import SimpleNamespace

import pytest

from builder.errors import ExportError
from builder.export.docker import stream_docker_archive, write_docker_archive
from builder.export.oci import IMAGE_NAME_ANNOTATION, stream_oci_archive, write_oci_layout
from builder.export.rootfs import _LocalWriter
from builder.image import OCI_INDEX, REF_NAME_ANNOTATION, Descriptor, Image
from cache.store import ContentStore
from fixtures.busybox import skopeo_inspect
from fixtures.images import make_image
from fixtures.tools import require_tools
from runtime.confine import Tree, set_metadata


@pytest.fixture
def busybox(store, busybox_image) -> Image:
    """The busybox image, its blobs copied from the fixture's layout into the store."""
    layout = busybox_image.layout
    for blob in (layout / "blobs/sha256").iterdir():
        store.put_bytes(blob.read_bytes())
    index = json.loads((layout / "index.json").read_text())
    manifest = Descriptor.from_json(index["manifests"][0])
    body = json.loads(store.read_bytes(manifest.digest))
    return Image(manifest, Descriptor.from_json(body["config"]),
                 tuple(Descriptor.from_json(layer) for layer in body["layers"]))


def tar_names(path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def run(*command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, timeout=120, **kwargs)


def test_oci_tar_is_read_by_skopeo(tmp_path, store, busybox):
    dest = tmp_path / "out" / "image.tar"
    write_oci_layout(store, busybox, dest, tar=True, ref_names=["example.com/team/app:v1"])
    info = skopeo_inspect(f"oci-archive:{dest}:v1")
    assert info["Digest"] == str(busybox.manifest.digest)
    assert info["Layers"] == [str(layer.digest) for layer in busybox.layers]

    with tarfile.open(dest) as tar:
        index = json.load(tar.extractfile("index.json"))
        assert json.load(tar.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        members = {m.name: m for m in tar.getmembers()}
    assert index["mediaType"] == OCI_INDEX
    assert index["manifests"][0]["annotations"] == {IMAGE_NAME_ANNOTATION: "example.com/team/app:v1",
                                                    REF_NAME_ANNOTATION: "v1"}
    for digest in (busybox.manifest.digest, busybox.config.digest, *[l.digest for l in busybox.layers]):
        member = members[f"blobs/sha256/{digest.hex}"]
        assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["image.tar"]


def test_oci_tar_is_deterministic_and_streamable(tmp_path, store, busybox):
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    write_oci_layout(store, busybox, first, tar=True, ref_names=["app:1"])
    write_oci_layout(store, busybox, second, tar=True, ref_names=["app:1"])
    assert first.read_bytes() == second.read_bytes()
    stream = io.BytesIO()
    stream_oci_archive(store, busybox, stream, ref_names=["app:1"])
    assert stream.getvalue() == first.read_bytes()


def test_oci_directory_is_read_by_skopeo_umoci_and_oci_image_tool(tmp_path, store, busybox):
    require_tools("skopeo", "oci-image-tool", "umoci")
    dest = tmp_path / "layout"
    write_oci_layout(store, busybox, dest, tar=False, ref_names=["busybox:latest", "busybox:stable"])
    assert skopeo_inspect(f"oci:{dest}:stable")["Digest"] == str(busybox.manifest.digest)
    index = json.loads((dest / "index.json").read_text())
    assert [m["annotations"][REF_NAME_ANNOTATION] for m in index["manifests"]] == ["latest", "stable"]
    assert index["manifests"][0]["annotations"][IMAGE_NAME_ANNOTATION] == "docker.io/library/busybox:latest"

    run("oci-image-tool", "validate", "--type", "image", "--ref", "name=latest", str(dest))
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{dest}:latest", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin/busybox").stat().st_size > 0
    assert (rootfs / "bin/sh").readlink().name == "busybox"
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert "app:x:1000" in (rootfs / "etc/passwd").read_text()
    shutil.rmtree(bundle)


def test_oci_directory_replaces_an_old_layout_but_nothing_else(tmp_path, store, busybox):
    dest = tmp_path / "layout"
    small = make_image(store, [{"f": b"small"}])
    write_oci_layout(store, small, dest, tar=False, ref_names=["x:1"])
    write_oci_layout(store, busybox, dest, tar=False, ref_names=["x:2"])
    assert skopeo_inspect(f"oci:{dest}:2")["Digest"] == str(busybox.manifest.digest)
    assert not (dest / "blobs/sha256" / small.manifest.digest.hex).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "root") == ["layout"]

    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="exists and is not an OCI layout"):
        write_oci_layout(store, busybox, precious, tar=False)
    assert (precious / "notes.txt").read_text() == "keep me"


class FailingStore(ContentStore):
    """Fault injection: reading one blob fails half-way through an export."""

    def __init__(self, root, broken):
        super().__init__(root)
        self.broken = broken

    def open(self, digest):
        if digest == self.broken:
            raise OSError(5, "Input/output error")
        return super().open(digest)



@pytest.mark.parametrize("as_tar", [True, False])
def test_failed_export_leaves_nothing(tmp_path, as_tar):
    store = FailingStore(tmp_path / "content", None)
    image = make_image(store, [{"a": b"1"}, {"b": b"2"}])
    store.broken = image.layers[1].digest
    dest = tmp_path / "out" / ("image.tar" if as_tar else "layout")
    dest.parent.mkdir()
    with pytest.raises(ExportError, match="Input/output error"):
        write_oci_layout(store, image, dest, tar=as_tar, ref_names=["app:1"])
    assert list(dest.parent.iterdir()) == []


def test_missing_blob_is_an_export_error(tmp_path, store):
    image = make_image(store, [{"a": b"1"}])
    store.delete(image.layers[0].digest)
    with pytest.raises(ExportError, match="blob not found"):
        write_docker_archive(store, image, tmp_path / "x.tar", tags=["app:1"])
    assert not (tmp_path / "x.tar").exists()


def test_docker_archive_layout(tmp_path, store, busybox):
    dest = tmp_path / "docker.tar"
    write_docker_archive(store, busybox, dest,
                         tags=["app:1", "localhost:5000/team/app:2", f"pinned@{busybox.manifest.digest}"])
    with tarfile.open(dest) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        repositories = json.load(tar.extractfile("repositories"))
        index = json.load(tar.extractfile("index.json"))
        names = set(tar.getnames())
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        for layer in manifest[0]["Layers"]:
            assert layer in names
    assert manifest == [{
        "Config": f"blobs/sha256/{busybox.config.digest.hex}",
        "RepoTags": ["app:1", "localhost:5000/team/app:2"],
        "Layers": [f"blobs/sha256/{layer.digest.hex}" for layer in busybox.layers],
    }]
    assert repositories == {"app": {"1": busybox.config.digest.hex},
                            "localhost:5000/team/app": {"2": busybox.config.digest.hex}}
    assert config["rootfs"]["type"] == "layers"
    assert {"oci-layout", "index.json"} <= names
    assert [m["annotations"][IMAGE_NAME_ANNOTATION] for m in index["manifests"]] == [
        "docker.io/library/app:1", "localhost:5000/team/app:2",
        f"docker.io/library/pinned@{busybox.manifest.digest}"]

    # skopeo's docker-archive transport reads manifest.json like `docker load`
    # (it reports layers by diff_id: it decompresses them, as docker does)
    info = skopeo_inspect(f"docker-archive:{dest}")
    assert info["Layers"] == config["rootfs"]["diff_ids"]
    assert info["Architecture"] == config["architecture"]

    stream = io.BytesIO()
    stream_docker_archive(store, busybox, stream,
                          tags=["app:1", "localhost:5000/team/app:2", f"pinned@{busybox.manifest.digest}"])
    assert stream.getvalue() == dest.read_bytes()


def test_invalid_name_is_an_export_error(tmp_path, store, busybox):
    with pytest.raises(ExportError, match="invalid image name: .*must be lowercase"):
        write_oci_layout(store, busybox, tmp_path / "x.tar", tar=True, ref_names=["App:1"])


def test_local_writer_leaves_out_an_xattr_the_filesystem_refuses(tmp_path):
    """As BuildKit's copy: an xattr refused with EPERM (user.* on a symlink)
    is left out, and the rest of the entry's metadata is still set."""
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("target", out / "s")
    st = SimpleNamespace(st_mode=stat.S_IFLNK | 0o777, st_uid=os.getuid(), st_gid=os.getgid(), st_atime_ns=0,
                         st_mtime_ns=1_000_000_000)
    with Tree(str(out)) as tree:
        writer = _LocalWriter(tree, None, preserve_special=True)
        with pytest.raises(PermissionError):  # what the filesystem says without the skip
            set_metadata(tree.fd, b"s", xattrs=[("user.x", b"v")])
        writer._set_name_metadata(tree.fd, b"s", st, [("user.x", b"v")])
    assert os.lstat(out / "s").st_mtime == 1
    assert os.listxattr(out / "s", follow_symlinks=False) == []
