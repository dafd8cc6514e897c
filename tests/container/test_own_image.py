"""pybuild builds its own image (issue 16: the repository's Dockerfile is
the first test of it), and the image is what the Dockerfile promises: an
unprivileged user with a subordinate range, id-mapping helpers with file
capabilities instead of setuid, a volume for the root, pybuild as the entry
point. Read from the registry with skopeo, not with pybuild."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

OWN_ROOT = "home/pybuild/.local/share/pybuild"
CAP_SETGID, CAP_SETUID = 6, 7
VFS_CAP_FLAGS_EFFECTIVE = 0x1


def _skopeo_json(*args: str) -> dict:
    done = subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=300)
    return json.loads(done.stdout)


def _image_files(ref: str, layout: Path, wanted: set[str]) -> tuple[dict[str, tuple[tarfile.TarInfo, bytes]],
                                                                   list[str]]:
    """Each `wanted` path's entry in the pushed image (the top layer's wins)
    and, for a regular file, its bytes; and every non-empty file any layer
    has under var/cache/apt (what apt leaves unless told to clean; its lock
    files are empty)."""
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:x"],
                   check=True, capture_output=True, timeout=300)
    blobs = layout / "blobs/sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":", 1)[1]).read_bytes())
    found, apt_caches = {}, []
    for layer in manifest["layers"]:
        with gzip.open(blobs / layer["digest"].split(":", 1)[1]) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted:
                    found[name] = (member, tar.extractfile(member).read() if member.isreg() else b"")
                if name.startswith("var/cache/apt/") and member.isreg() and member.size:
                    apt_caches.append(name)
    return found, apt_caches


def _file_capabilities(member: tarfile.TarInfo) -> tuple[int, int]:
    """(flags, permitted set) of the file's security.capability xattr
    (struct vfs_cap_data: magic and flags, then permitted, little-endian)."""
    value = member.pax_headers["SCHILY.xattr.security.capability"]
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return struct.unpack_from("<II", raw)


def test_pybuild_builds_and_pushes_its_own_image(pybuild_image):
    config = _skopeo_json("inspect", "--tls-verify=false", "--config", f"docker://{pybuild_image.ref}")["config"]
    assert config["User"] == "pybuild"
    assert config["Entrypoint"] == ["pybuild"]
    assert config["WorkingDir"] == "/home/pybuild"
    assert list(config["Volumes"]) == ["/" + OWN_ROOT]
    # Built FROM the base: its one layer is the image's first.
    base = _skopeo_json("inspect", "--tls-verify=false", "--raw", f"docker://{pybuild_image.base}")
    index = _skopeo_json("inspect", "--tls-verify=false", "--raw", f"docker://{pybuild_image.ref}")
    # The push carries buildx's default provenance: the image is the index's first entry.
    repository = pybuild_image.ref.rsplit(":", 1)[0]
    own = _skopeo_json("inspect", "--tls-verify=false", "--raw",
                       f"docker://{repository}@{index['manifests'][0]['digest']}")
    assert own["layers"][0]["digest"] == base["layers"][0]["digest"]
    assert len(own["layers"]) > 1


def test_own_image_maps_ids_with_file_capabilities_not_setuid_and_keeps_no_apt_cache(pybuild_image, tmp_path):
    files, apt_caches = _image_files(pybuild_image.ref, tmp_path / "layout",
                         {"usr/bin/newuidmap", "usr/bin/newgidmap", "etc/subuid", "etc/subgid",
                          "opt/pybuild/bin/pybuild", OWN_ROOT})
    for helper, capability in (("usr/bin/newuidmap", CAP_SETUID), ("usr/bin/newgidmap", CAP_SETGID)):
        member, _ = files[helper]
        assert not member.mode & 0o4000, f"{helper} is still setuid"
        flags, permitted = _file_capabilities(member)
        assert flags & VFS_CAP_FLAGS_EFFECTIVE, f"{helper}: capability not effective"
        assert permitted == 1 << capability, f"{helper}: permitted set {permitted:#x}"
    assert files["etc/subuid"][1] == files["etc/subgid"][1] == b"pybuild:100000:65536\n"
    assert files["opt/pybuild/bin/pybuild"][0].isfile()
    root, _ = files[OWN_ROOT]
    assert root.isdir() and (root.uid, root.gid) == (1000, 1000)
    # apt's package cache (~80 MB of .bin files and .debs) is cleaned in
    # the layer that made it.
    assert apt_caches == []
