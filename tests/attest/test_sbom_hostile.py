"""The SBOM scanner on hostile package databases (red team, issue 18):
lines split and fields named as dpkg reads them, nesting that would blow
the stack, scans bounded, databases behind in-image links or replaced by
something else, trees deeper than PATH_MAX, and SPDX fields that stay
valid whatever a database declares (spdx-tools as the oracle)."""

from __future__ import annotations

import io
import os
import subprocess

import pytest

from attest.sbom_layers import dpkg_paragraph, dpkg_status, layer_tar, package_json
from builder.attest.layerfacts import ScanBudget, SbomTooLarge, facts_of_snapshot, facts_of_tar
from builder.attest.linked import final_target, read_merged, resolve, snapshot_reader, tar_reader
from builder.attest.pkgdb import DbKind, parse_db
from builder.attest.sbom import _license, _who
from builder.attest.sbom_scan import merge
from builder.attest.spdx_licenses import listed
from cache.digest import Digest
from runtime.layer import apply_layer

STATUS = "var/lib/dpkg/status"


def _digest(n: int) -> Digest:
    return Digest("sha256", f"{n:064x}")


def _both_ways(tmp_path, tar: bytes):
    from_tar = facts_of_tar(io.BytesIO(tar))
    fs = tmp_path / f"snap{len(os.listdir(tmp_path))}"
    fs.mkdir()
    apply_layer(io.BytesIO(tar), fs)
    assert facts_of_snapshot(fs).to_json() == from_tar.to_json()
    return from_tar, fs


def _names(rootfs) -> set[str]:
    return {found.package.name for found in rootfs.packages}


# --- pkgdb ------------------------------------------------------------------


def test_dpkg_lines_break_at_newline_only():
    text = ("Package: sneaky\nStatus: install ok installed\nVersion: 1.0\n"
            "Description: x\u2028Status: deinstall ok config-files\x85\v\f\x1c\n\n"
            "Package: honest\nStatus: install ok installed\nVersion: 2.0\n"
            "Description: y\u2028\u2028Package: injected\u2028Version: 9.9\n")
    assert [p.name for p in parse_db(DbKind.DPKG, STATUS, text.encode())] == ["sneaky", "honest"]
    apk = "P:one\nV:1\nT:a\u2028\u2028P:forged\u2028V:2\n"
    assert [p.name for p in parse_db(DbKind.APK, "lib/apk/db/installed", apk.encode())] == ["one"]


def test_dpkg_and_python_field_names_are_case_insensitive():
    status = b"package: lower\nSTATUS: install ok installed\nversion: 3.0\nmaintainer: A <a@x>\n"
    [package] = parse_db(DbKind.DPKG, STATUS, status)
    assert (package.name, package.version, package.supplier) == ("lower", "3.0", "A <a@x>")
    [dist] = parse_db(DbKind.PYTHON, "x.dist-info/METADATA", b"name: lowpy\nVERSION: 1.2\n")
    assert (dist.name, dist.version) == ("lowpy", "1.2")


def test_a_package_json_nested_past_the_stack_is_no_package():
    assert parse_db(DbKind.NPM, "node_modules/x/package.json", b"[" * 200_000 + b"]" * 200_000) == []


# --- the scan's budget --------------------------------------------------------


def test_a_scan_past_its_package_budget_is_one_error_before_parsing_it_all(tmp_path):
    many = "".join(f"Package: p{i}\nVersion: 1\n\n" for i in range(1000)).encode()
    budget = ScanBudget(packages=600)
    with pytest.raises(SbomTooLarge, match="more than 50000 packages"):
        facts_of_tar(io.BytesIO(layer_tar({STATUS: many})), budget)
    assert budget.packages == 600 - 601   # parsing stopped one past the limit
    # status.d files count, and so do the packages of cached layers (merge's budget).
    split = {f"var/lib/dpkg/status.d/p{i}": f"Package: p{i}\nVersion: 1\n".encode() for i in range(700)}
    with pytest.raises(SbomTooLarge):
        facts_of_tar(io.BytesIO(layer_tar(split)), ScanBudget(packages=600))
    with pytest.raises(SbomTooLarge, match="exceed the scan's limit of 256 MB"):
        facts_of_tar(io.BytesIO(layer_tar({STATUS: many})), ScanBudget(nbytes=len(many) - 1))


# --- databases replaced, or behind links -------------------------------------------


@pytest.mark.parametrize("upper", [{"links": {STATUS: "/nonexistent/status"}}, {"dirs": (STATUS,)}])
def test_a_database_replaced_by_a_link_or_a_directory_is_gone(tmp_path, upper):
    lower, _ = _both_ways(tmp_path, layer_tar({STATUS: dpkg_status(dpkg_paragraph("stale", "1"))}))
    replacing, _ = _both_ways(tmp_path, layer_tar(**upper))
    assert _names(merge([(_digest(1), lower), (_digest(2), replacing)], lambda path: None)) == set()


def test_links_resolve_inside_the_image_by_name():
    assert resolve("var/lib/dpkg/status", "status.real") == "var/lib/dpkg/status.real"
    assert resolve("var/lib/dpkg/status", "../../../../../../etc/x") == "etc/x"
    assert resolve("lib/apk/db/installed", "/lib/apk/db/./installed.real") == "lib/apk/db/installed.real"
    links = {"a/status": "b", "a/b": "/a/status"}
    assert final_target("a/status", links) is None   # a loop ends in nothing
    assert final_target("a/status", {"a/status": "b"}) == "a/b"


def test_a_database_behind_a_link_is_read_from_the_merged_layers(tmp_path):
    """The link in the top layer, its target written below and then
    rewritten: the topmost version is the one read, from a snapshot or a
    tar alike; a whiteout between hides it; nothing outside the image is
    ever opened (an absolute target is the image's path)."""
    real = "var/lib/dpkg/status.real"
    first = layer_tar({real: dpkg_status(dpkg_paragraph("old", "1"))})
    second = layer_tar({real: dpkg_status(dpkg_paragraph("hidden-tool", "6.6"))})
    top = layer_tar(links={STATUS: "/" + real, "etc/os-release": "/etc/os-release"})
    layers = [_both_ways(tmp_path, tar) for tar in (first, second, top)]

    def via(readers):
        stack = [(facts, reader) for (facts, _), reader in zip(layers, readers)]
        return merge([(_digest(n), facts) for n, (facts, _) in enumerate(layers)],
                     lambda path: read_merged(path, list(reversed(stack))))

    snapshots = via([snapshot_reader(fs) for _, fs in layers])
    tars = via([tar_reader(lambda tar=tar: io.BytesIO(tar)) for tar in (first, second, top)])
    assert _names(snapshots) == _names(tars) == {"hidden-tool"}
    assert {f.layer for f in snapshots.packages} == {_digest(2)}   # the link's layer
    assert snapshots.os_release == {}   # a link to itself, not the host's /etc/os-release
    gone, gone_fs = _both_ways(tmp_path, layer_tar(whiteouts=(real,)))
    below = [(layers[0][0], snapshot_reader(layers[0][1]))]
    assert read_merged(real, below) is not None
    assert read_merged(real, [(gone, snapshot_reader(gone_fs)), *below]) is None


def test_a_snapshot_deeper_than_path_max_is_read(tmp_path):
    fs = tmp_path / "deep"
    fs.mkdir()
    fd = os.open(fs, os.O_RDONLY | os.O_DIRECTORY)
    try:   # made by names relative to directory fds: the path is past PATH_MAX
        for name in ["node_modules", "d" * 200] * 25 + ["node_modules", "deep"]:
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        written = os.open("package.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(written, package_json("deep-one", "1.0.0"))
        os.close(written)
    finally:
        os.close(fd)
    try:
        facts = facts_of_snapshot(fs)
        [path] = facts.dbs
        assert len(path) > 4096 and [p.name for p in facts.dbs[path]] == ["deep-one"]
    finally:
        subprocess.run(["rm", "-rf", str(fs)], check=True)


# --- SPDX fields ------------------------------------------------------------------------


def test_every_listed_license_is_on_the_spdx_list():
    from license_expression import get_spdx_licensing

    licensing = get_spdx_licensing()
    licenses, exceptions = listed()
    for expression in [*licenses, *(f"MIT WITH {e}" for e in exceptions)]:
        checked = licensing.validate(expression)
        assert not checked.errors and not checked.invalid_symbols, expression


@pytest.mark.parametrize("declared, written", [
    ("MIT", "MIT"), ("mit", "MIT"), ("GPL-2.0+ OR Apache-2.0", "GPL-2.0+ OR Apache-2.0"),
    ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception"),
    ("UNLICENSED", "NOASSERTION"), ("Proprietary", "NOASSERTION"), ("MIT OR", "NOASSERTION"),
    ("MIT WITH MIT", "NOASSERTION"), ("MIT AND Proprietary", "NOASSERTION"),
    ("see LICENSE file", "NOASSERTION"), ("", "NOASSERTION"),
])
def test_declared_licenses_are_spdx_expressions_or_noassertion(declared, written):
    assert _license(declared) == written


@pytest.mark.parametrize("maintainer, written", [
    ("<team@example.org>", "NOASSERTION"), ("  <x@y>  ", "NOASSERTION"), ("(x)", "NOASSERTION"),
    ("", "NOASSERTION"), ("Jo Doe <jo@example.org>", "Person: Jo Doe (jo@example.org)"), ("Jo", "Person: Jo"),
])
def test_maintainers_are_actors_with_a_name(maintainer, written):
    from spdx_tools.spdx.parser.actor_parser import ActorParser

    assert _who(maintainer) == written
    if written != "NOASSERTION":
        assert ActorParser.parse_actor(written).name
