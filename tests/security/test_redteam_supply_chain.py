"""Red team, issue 18 (provenance, SBOM, signatures): attacks through the
CLI on what the supply-chain features promise. An xfail(strict) test is an
attack that works today (its reason is the diagnosis); a plain test is an
attack that fails as it should, kept as a regression test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from security.redteam_mp_checks import one_error, write_context
from security.redteam_sc_checks import Remote, attestations, ok, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base(busybox_image):
    return busybox_image.ref


def _image_entries(index: dict) -> list[str]:
    return [e["digest"] for e in index["manifests"]
            if (e.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"]


# --- the truth of what is pushed ----------------------------------------------


@pytest.mark.xfail(strict=True, reason=(
    "builder/export/run.py attested_options() stores an attested image gzipped only when the output names "
    "no compression; with -o type=image,compression=uncompressed it is stored uncompressed, and "
    "builder/root/images.py index_for_push() then gzips each image's layers (compressed_for_push): the image "
    "manifest gets a new digest in the pushed index, but "
    "the attestation manifest is pushed unchanged: its vnd.docker.reference.digest annotation and its "
    "statements' subject still name the stored (uncompressed) manifest, which the registry never receives"))
def test_push_of_a_stored_attested_index_keeps_attestations_bound(base, registry, tmp_path):
    ctx = write_context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "stored then pushed\n"})
    name = f"{registry.host}/rt-sc-stored:1"
    root = str(tmp_path / "root")
    ok(run(tmp_path, "build", "--root", root, "--sbom=true", "-o",
           f"type=image,name={name},compression=uncompressed", str(ctx)))
    ok(run(tmp_path, "push", "--root", root, name))
    remote = Remote(registry.host, "rt-sc-stored")
    _, index = remote.manifest("1")
    images = _image_entries(index)
    found = attestations(remote, index)
    assert found, index
    for reference, statements in found:
        assert reference in images, (reference, images)
        for statement in statements:
            assert [s["digest"]["sha256"] for s in statement["subject"]] == [reference.split(":")[1]]
