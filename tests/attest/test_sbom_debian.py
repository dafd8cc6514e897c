"""End to end: the SBOM of a Debian 12 base (mmdebstrap minbase) plus an
apt-get install and a `pip install` of a wheel made here lists exactly the
packages dpkg-query and pip report inside the image, each with the layer
that introduced it; a rebuild whose top layer alone changed reads that
layer alone.

The RUN steps reach Debian's mirror (as setup and mmdebstrap do); the
wheel is zipped here, so pip needs no index."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

from builder.attest.sbom import stored_image_sbom
from builder.attest.sbom_scan import LayerScanner
from builder.root.images import find
from builder.root.worker import Worker
from e2e.helpers import build_image

EPOCH = 1_700_000_000
WHEEL_NAME = "sbom_probe"


def make_wheel(directory: Path, version: str) -> Path:
    """A pure-Python wheel of one module, zipped by hand (PEP 427: the
    dist-info's METADATA, WHEEL and a RECORD of every file's hash)."""
    dist_info = f"{WHEEL_NAME}-{version}.dist-info"
    files = {
        f"{WHEEL_NAME}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": (f"Metadata-Version: 2.1\nName: sbom-probe\nVersion: {version}\n"
                                  "Summary: a wheel for the SBOM test\nLicense: MIT\n").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    wheel = directory / f"{WHEEL_NAME}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


DOCKERFILE = """\
FROM {base}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3-pip >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
COPY {wheel} /tmp/
RUN pip install -q --no-index --break-system-packages /tmp/{wheel} \\
    && dpkg-query -W -f '${{db:Status-Status}} ${{Package}} ${{Version}}\\n' > /dpkg-query.txt \\
    && pip list --format=json > /pip-list.json
"""


def _build(tmp_path, root, base, version, tag, local=False):
    wheels = tmp_path / f"wheel-{version}"
    wheels.mkdir()
    wheel = make_wheel(wheels, version)
    return build_image(tmp_path, root, DOCKERFILE.format(base=base, wheel=wheel.name), files={wheel.name: wheel},
                       export=False, local=local, outputs=(f"type=image,name={tag}",))


def test_the_sbom_of_a_debian_base_with_a_pip_installed_wheel_matches_dpkg_and_pip(tmp_path, sbom_debian_base):
    root = tmp_path / "root"
    try:
        _check_sbom_against_dpkg_and_pip(tmp_path, root, sbom_debian_base)
    finally:
        # ~300 MB, among them setuptools' *.tmpl files that the temp-file
        # leak check would take for ours.
        shutil.rmtree(root, ignore_errors=True)
        for rootfs in tmp_path.glob("build*/rootfs"):
            shutil.rmtree(rootfs, ignore_errors=True)


def _check_sbom_against_dpkg_and_pip(tmp_path, root, base):
    built = _build(tmp_path, root, base, "0.3.1", "sbom-e2e:1", local=True)
    dpkg = {}
    for line in built.read_text("/dpkg-query.txt").splitlines():
        status, name, version = line.split(" ")
        if status not in ("not-installed", "config-files"):
            dpkg[name] = version
    pip = {entry["name"].lower(): entry["version"] for entry in json.loads(built.read_text("/pip-list.json"))}
    assert len(dpkg) >= 100 and "python3-pip" in dpkg and pip["sbom-probe"] == "0.3.1"

    worker = Worker.open(root)
    try:
        statement = json.loads(stored_image_sbom(worker, "sbom-e2e:1", epoch=EPOCH))
        stored = find(worker, "sbom-e2e:1")
        diff_ids = stored.config["rootfs"]["diff_ids"]
    finally:
        worker.close()
    assert statement["subject"][0]["digest"] == {"sha256": stored.image.manifest.digest.hex}
    packages = statement["predicate"]["packages"][1:]
    by_kind: dict[str, dict[str, dict]] = {"deb": {}, "pypi": {}}
    for package in packages:
        kind = package["externalRefs"][0]["referenceLocator"].split("/")[0].removeprefix("pkg:")
        by_kind[kind][package["name"].lower()] = package
    assert {name: p["versionInfo"] for name, p in by_kind["deb"].items()} == dpkg
    assert {name: p["versionInfo"] for name, p in by_kind["pypi"].items()} == pip
    assert set(by_kind) == {"deb", "pypi"}
    assert by_kind["deb"]["bash"]["externalRefs"][0]["referenceLocator"] == (
        f"pkg:deb/debian/bash@{dpkg['bash'].replace('+', '%2B')}?arch=amd64&distro=debian-12&upstream=bash%405.2.15-2")
    # Layers: the base, apt-get's, the COPY, pip's.
    assert len(diff_ids) == 4
    assert by_kind["deb"]["bash"]["comment"] == f"layerID: {diff_ids[0]}"  # dpkg's status was rewritten since
    assert by_kind["deb"]["python3-pip"]["comment"] == f"layerID: {diff_ids[1]}"
    assert by_kind["pypi"]["pip"]["comment"] == f"layerID: {diff_ids[1]}"
    assert by_kind["pypi"]["sbom-probe"]["comment"] == f"layerID: {diff_ids[3]}"

    # The same Dockerfile with another wheel: the base and apt layers are
    # cached, the COPY and pip layers are new; only those are read.
    _build(tmp_path, root, base, "0.3.2", "sbom-e2e:2")
    worker = Worker.open(root)
    try:
        scanner = LayerScanner.for_worker(worker)
        rescanned = scanner.scan(scanner.refs_of_image(find(worker, "sbom-e2e:2").image))
        read = scanner.read_layers
        scanner.close()
    finally:
        worker.close()
    assert read == 2
    versions = {(f.package.kind, f.package.name): f.package.version for f in rescanned.packages}
    assert versions[("python", "sbom-probe")] == "0.3.2"
    assert sum(kind == "dpkg" for kind, _ in versions) == len(dpkg)
