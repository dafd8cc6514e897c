"""The exported image config and history, end to end, where a differential
run against docker's BuildKit found pybuild apart. Expectations come from
current BuildKit's source (named at each test); the ones docker 20.10's
older BuildKit shares were also checked against it. What a recorded case
can hold (config and history of a Dockerfile on busybox) is in
testdata/compat (instr-config-history-basics, ...); these need a base or a
platform a case cannot give."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from e2e.helpers import build_image
from fixtures import busybox

pytestmark = pytest.mark.e2e


def _put(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _push_classic_base(layout: Path, ref: str) -> None:
    """An image as docker's classic builder made them: container_config,
    Hostname/Image/null members in config, empty history members."""
    layer = busybox.busybox_layer_tar()
    blob = gzip.compress(layer, mtime=0)
    config = json.dumps({
        "architecture": busybox.host_arch(), "os": "linux", "author": "",
        "container": "abc123", "docker_version": "20.10.0",
        "container_config": {"Hostname": "abc123", "Cmd": ["/bin/sh", "-c", "#(nop) ", "CMD [\"sh\"]"]},
        "config": {
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
            "Tty": False, "OpenStdin": False, "Env": [busybox.PATH_ENV], "Cmd": ["sh"],
            "Image": "sha256:" + "c" * 64, "Volumes": None, "WorkingDir": "", "Entrypoint": None,
            "OnBuild": None, "Labels": None,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [
            {"created": "2020-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:1 in / ",
             "comment": "", "empty_layer": False},
            {"created": "2020-01-01T00:00:01Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]",
             "author": "", "empty_layer": True},
        ],
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": busybox.OCI_MANIFEST,
        "config": {"mediaType": busybox.OCI_CONFIG, "digest": _put(layout, config), "size": len(config)},
        "layers": [{"mediaType": busybox.OCI_LAYER_GZIP, "digest": _put(layout, blob), "size": len(blob)}],
    }).encode()
    busybox.write_index(layout, busybox.OCI_MANIFEST, _put(layout, manifest), len(manifest), "latest")
    busybox.skopeo_push(layout, "latest", ref)


def test_classic_base_is_reencoded(tmp_path, root, busybox_image):
    # BuildKit decodes a base config into dockerspec.DockerOCIImage and its
    # history into ocispec.History, then marshals them (all omitempty):
    # members those types lack and empty or null members disappear.
    ref = f"{busybox_image.registry.host}/classic:latest"
    _push_classic_base(tmp_path / "classic-layout", ref)
    built = build_image(tmp_path, root, f"FROM {ref}\nENV A=1\n", local=False)
    image = built.image_config
    assert image["config"] == {"Env": [busybox.PATH_ENV, "A=1"], "Cmd": ["sh"]}
    assert not {"author", "container", "container_config", "docker_version"} & set(image)
    assert image["history"][:2] == [
        {"created": "2020-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:1 in / "},
        {"created": "2020-01-01T00:00:01Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": True},
    ]


def test_explicit_platform_names_the_image(tmp_path, root, busybox_image):
    # finalizeResultImage: an explicit --platform sets os/architecture even
    # when the (single-platform) base says otherwise; docker 20.10 agrees.
    other = "arm64" if busybox.host_arch() != "arm64" else "amd64"
    built = build_image(tmp_path, root, f"FROM {busybox_image.ref}\nENV A=1\n", local=False,
                        platform=f"linux/{other}")
    assert (built.image_config["os"], built.image_config["architecture"]) == ("linux", other)
