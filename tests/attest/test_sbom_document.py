"""The SBOM statement: SPDX 2.3 as syft writes it for BuildKit (package
URLs, identifiers, relationships, the introducing layer), reproducible
under SOURCE_DATE_EPOCH; and the per-layer facts cache of a real root."""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import pytest

from attest.sbom_layers import (OS_RELEASE_DEBIAN, apk_installed, dist_info, dpkg_paragraph, dpkg_status,
                                layer_tar, package_json)
from builder.attest.layerfacts import facts_of_tar
from builder.attest.sbom import purl, sbom_statement, sbom_statements, spdx_document
from builder.attest.sbom_scan import LayerRef, LayerScanner, LayerUnreadable, merge
from builder.export.layers import extract_layer
from builder.image import OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, Descriptor, Image, canonical_json
from builder.root.worker import Worker
from cache.digest import Digest
from cache.keys import chain_id

EPOCH = 1_700_000_000


def _rootfs(*tars: bytes):
    return merge([(Digest.of_bytes(t), facts_of_tar(io.BytesIO(t))) for t in tars])


def _debian_layers():
    base = layer_tar({"etc/os-release": OS_RELEASE_DEBIAN, "var/lib/dpkg/status": dpkg_status(
        dpkg_paragraph("libc6", "2.36-9+deb12u4", source="glibc"),
        dpkg_paragraph("login", "1:4.13+dfsg1-1+b1", source="shadow (1:4.13+dfsg1-1)"),
        dpkg_paragraph("tzdata", "2024a-0+deb12u1", arch="all"))})
    app = layer_tar({"usr/local/lib/python3.11/site-packages/Foo_Bar-1.2.dist-info/METADATA":
                     dist_info("Foo_Bar", "1.2", license_="Apache-2.0"),
                     "srv/node_modules/@scope/pkg/package.json": package_json("@scope/pkg", "3.0.0-rc.1")})
    return base, app


def test_package_urls_follow_syft_and_the_purl_spec():
    base, app = _debian_layers()
    rootfs = _rootfs(base, app)
    urls = sorted(purl(found, rootfs.distro) for found in rootfs.packages)
    assert urls == [
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc",
        "pkg:deb/debian/login@1%3A4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12&upstream=shadow%401%3A4.13%2Bdfsg1-1",
        "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
        "pkg:npm/%40scope/pkg@3.0.0-rc.1",
        "pkg:pypi/foo-bar@1.2",
    ]
    alpine = _rootfs(layer_tar({"etc/os-release": b"ID=alpine\nVERSION_ID=3.19.1\n",
                                "lib/apk/db/installed": apk_installed(("busybox", "1.36.1-r15"))}))
    assert purl(alpine.packages[0], alpine.distro) == (
        "pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1&upstream=busybox-src")


def test_the_document_describes_a_root_that_contains_each_package_with_its_layer():
    base, app = _debian_layers()
    document = spdx_document(_rootfs(base, app), epoch=EPOCH)
    assert (document["spdxVersion"], document["dataLicense"], document["SPDXID"], document["name"]) == (
        "SPDX-2.3", "CC0-1.0", "SPDXRef-DOCUMENT", "/run/src/core/sbom")
    assert document["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    root, *packages = document["packages"]
    assert root["SPDXID"] == "SPDXRef-DocumentRoot-Directory-run-src-core-sbom"
    by_name = {p["name"]: p for p in packages}
    assert len(by_name) == 5 and len({p["SPDXID"] for p in packages}) == 5
    libc = by_name["libc6"]
    assert libc["versionInfo"] == "2.36-9+deb12u4"
    assert libc["comment"] == f"layerID: {Digest.of_bytes(base)}"
    assert libc["sourceInfo"] == "acquired package info from DPKG DB: /var/lib/dpkg/status"
    assert libc["supplier"] == "Person: Debian Maintainers (maint@debian.org)"
    assert libc["SPDXID"].startswith("SPDXRef-Package-deb-libc6-")
    foo = by_name["Foo_Bar"]
    assert foo["comment"] == f"layerID: {Digest.of_bytes(app)}"
    assert foo["licenseDeclared"] == "Apache-2.0"
    assert foo["sourceInfo"].endswith("/usr/local/lib/python3.11/site-packages/Foo_Bar-1.2.dist-info/METADATA")
    assert [r for r in document["relationships"] if r["relationshipType"] == "DESCRIBES"] == [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relatedSpdxElement": root["SPDXID"], "relationshipType": "DESCRIBES"}]
    contained = {r["relatedSpdxElement"] for r in document["relationships"]
                 if r["relationshipType"] == "CONTAINS" and r["spdxElementId"] == root["SPDXID"]}
    assert contained == {p["SPDXID"] for p in packages}


def test_the_document_is_valid_spdx_2_3():
    # spdx-tools is a test dependency (pyproject): missing, this fails.
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    base, app = _debian_layers()
    parsed = JsonLikeDictParser().parse(spdx_document(_rootfs(base, app), epoch=EPOCH))
    assert validate_full_spdx_document(parsed, "SPDX-2.3") == []


def test_the_statement_is_reproducible_under_an_epoch_and_names_its_subjects(tmp_path):
    base, app = _debian_layers()
    layers = [LayerRef(Digest.of_bytes(t)) for t in (base, app)]
    subject = [("pkg:docker/app@latest?platform=linux%2Famd64", Digest.of_bytes(b"manifest"))]
    worker = Worker.open(tmp_path / "root")
    try:
        scanner = LayerScanner.for_worker(worker)
        for ref, tar in zip(layers, (base, app)):
            scanner.cache.put(ref.diff_id, facts_of_tar(io.BytesIO(tar)))
        first = sbom_statement(scanner, layers, subject_digests=subject, epoch=EPOCH)
        again = sbom_statement(scanner, layers, subject_digests=subject, epoch=EPOCH)
        later = sbom_statement(scanner, layers, subject_digests=subject, epoch=EPOCH + 1)
        stages = sbom_statements(scanner, layers, subject_digests=subject, epoch=EPOCH,
                                 stages=[("build", layers[:1])])
        scanner.close()
    finally:
        worker.close()
    assert first == again and first != later
    body = json.loads(first)
    assert body["_type"] == "https://in-toto.io/Statement/v0.1"
    assert body["predicateType"] == "https://spdx.dev/Document"
    assert body["subject"] == [{"name": subject[0][0], "digest": {"sha256": subject[0][1].hex}}]
    assert json.loads(later)["predicate"]["documentNamespace"] != body["predicate"]["documentNamespace"]
    assert [name for name, _ in stages] == ["sbom", "sbom-build"]
    stage = json.loads(stages[1][1])["predicate"]
    assert stage["name"] == "/run/src/extras/sbom-build"
    assert sorted(p["name"] for p in stage["packages"][1:]) == ["libc6", "login", "tzdata"]


def _put_image(worker, tars: list[bytes], gzipped: int) -> Image:
    """An image of `tars` in the root's store: the first `gzipped` layers
    gzip blobs extracted to snapshots as pulled bases are, the rest plain
    uncompressed blobs with no snapshot."""
    diff_ids = [Digest.of_bytes(t) for t in tars]
    descriptors = []
    for position, tar in enumerate(tars):
        if position < gzipped:
            blob = gzip.compress(tar, mtime=0)
            desc = Descriptor(OCI_LAYER_GZIP, worker.store.put_bytes(blob), len(blob))
            extract_layer(worker.store, worker.index, worker.snapshots, desc, diff_ids[position],
                          Digest.parse(chain_id([str(d) for d in diff_ids[:position + 1]])), what="test image")
        else:
            desc = Descriptor(OCI_LAYER, worker.store.put_bytes(tar), len(tar))
        descriptors.append(desc)
    config = canonical_json({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]}})
    config_desc = Descriptor(OCI_CONFIG, worker.store.put_bytes(config), len(config))
    manifest = Descriptor("application/vnd.oci.image.manifest.v1+json",
                          Digest("sha256", hashlib.sha256(config).hexdigest()), 0)  # never read
    return Image(manifest, config_desc, tuple(descriptors))


def test_each_layer_is_read_once_and_a_new_top_layer_alone_is_read_again(tmp_path):
    base, app = _debian_layers()
    top = layer_tar({"srv/node_modules/left-pad/package.json": package_json("left-pad", "1.3.0")})
    changed_top = layer_tar({"srv/node_modules/left-pad/package.json": package_json("left-pad", "1.3.1")})
    worker = Worker.open(tmp_path / "root")
    try:
        image = _put_image(worker, [base, app, top], gzipped=2)
        scanner = LayerScanner.for_worker(worker)
        refs = scanner.refs_of_image(image)
        assert [ref.snapshot is not None for ref in refs] == [True, True, False]  # bases: their snapshots
        first = scanner.scan(refs)
        assert scanner.read_layers == 3
        scanner.close()
        rescanner = LayerScanner.for_worker(worker)  # a later build: the index remembers
        changed = _put_image(worker, [base, app, changed_top], gzipped=2)
        second = rescanner.scan(rescanner.refs_of_image(changed))
        assert rescanner.read_layers == 1
        rescanner.close()
    finally:
        worker.close()
    versions = {f.package.name: f.package.version for f in second.packages}
    assert versions["left-pad"] == "1.3.1" and versions["libc6"] == "2.36-9+deb12u4"
    assert len(first.packages) == len(second.packages) == 6


def test_a_stage_known_by_its_snapshot_alone_is_read_each_time_and_names_no_layer(tmp_path):
    base, _ = _debian_layers()
    worker = Worker.open(tmp_path / "root")
    try:
        image = _put_image(worker, [base], gzipped=1)
        scanner = LayerScanner.for_worker(worker)
        snapshot = scanner.refs_of_image(image)[0].snapshot
        stage = [LayerRef(snapshot=snapshot)]
        found = [scanner.scan(stage) for _ in range(2)]
        assert scanner.read_layers == 2
        document = json.loads(sbom_statement(scanner, stage, subject_digests=[], epoch=EPOCH))["predicate"]
        scanner.close()
    finally:
        worker.close()
    assert [f.layer for f in found[1].packages] == [None, None, None]
    assert all("comment" not in p for p in document["packages"])


def test_the_facts_cache_forgets_the_layers_it_is_not_told_to_keep(tmp_path):
    worker = Worker.open(tmp_path / "root")
    try:
        scanner = LayerScanner.for_worker(worker)
        kept, dropped = Digest.of_bytes(b"kept"), Digest.of_bytes(b"dropped")
        for diff_id in (kept, dropped):
            scanner.cache.put(diff_id, facts_of_tar(io.BytesIO(layer_tar({"a": b"x"}))))
        assert scanner.cache.forget({str(kept)}) == 1
        assert scanner.cache.get(kept) is not None and scanner.cache.get(dropped) is None
        scanner.close()
    finally:
        worker.close()


def test_a_layer_blob_that_is_not_a_tar_is_one_clear_error(tmp_path):
    worker = Worker.open(tmp_path / "root")
    try:
        junk = b"this is no tar" * 100
        blob = Descriptor(OCI_LAYER, worker.store.put_bytes(junk), len(junk))
        scanner = LayerScanner.for_worker(worker)
        with pytest.raises(LayerUnreadable, match=f"sbom: layer {blob.digest} is not a readable layer tar"):
            scanner.scan([LayerRef(Digest.of_bytes(junk), blob)])
        with pytest.raises(LayerUnreadable, match="neither its snapshot nor its blob"):
            scanner.scan([LayerRef(Digest.of_bytes(b"gone"), None, "nosuchsnapshot")])
        scanner.close()
    finally:
        worker.close()
