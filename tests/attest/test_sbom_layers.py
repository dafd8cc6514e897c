"""The SBOM scanner's reading of single layers (tar and snapshot alike) and
its bottom-up merge: dpkg status across layers, whiteouts and opaque
directories removing packages, apk, dist-info, egg-info, node_modules."""

from __future__ import annotations

import io
import os
import shutil
import sys
import tarfile

import pytest

from builder.attest.layerfacts import facts_of_snapshot, facts_of_tar
from builder.attest.sbom_scan import merge
from cache.digest import Digest
from runtime.layer import apply_layer
from attest.sbom_layers import (OS_RELEASE_DEBIAN, apk_installed, dist_info, dpkg_paragraph, dpkg_status, layer_tar,
                         package_json)


def _digest(n: int) -> Digest:
    return Digest("sha256", f"{n:064x}")


def _both_ways(tmp_path, tar: bytes):
    """The layer's facts read from its tar, checked equal to those read from
    the snapshot the same tar unpacks to (whiteouts as 0/0 devices, opaque
    directories as xattrs)."""
    from_tar = facts_of_tar(io.BytesIO(tar))
    fs = tmp_path / f"snap{len(os.listdir(tmp_path))}"
    fs.mkdir()
    apply_layer(io.BytesIO(tar), fs)
    from_snapshot = facts_of_snapshot(fs)
    assert from_snapshot.to_json() == from_tar.to_json()
    return from_tar


def _names(rootfs) -> dict[str, tuple[str, Digest | None]]:
    return {f.package.name: (f.package.version, f.layer) for f in rootfs.packages}


def test_dpkg_status_rewritten_by_a_later_layer_keeps_who_introduced_each_package(tmp_path):
    base = _both_ways(tmp_path, layer_tar({
        "var/lib/dpkg/status": dpkg_status(dpkg_paragraph("libc6", "2.36-9", source="glibc"),
                                           dpkg_paragraph("bash", "5.2.15-2"),
                                           dpkg_paragraph("gone", "1.0", status="deinstall ok config-files")),
        "etc/os-release": OS_RELEASE_DEBIAN}))
    assert [p.name for p in base.dbs["var/lib/dpkg/status"]] == ["libc6", "bash"]  # config-files: no files
    upgrade = _both_ways(tmp_path, layer_tar({
        "var/lib/dpkg/status": dpkg_status(dpkg_paragraph("libc6", "2.36-9", source="glibc"),
                                           dpkg_paragraph("bash", "5.2.15-3"),
                                           dpkg_paragraph("curl", "7.88.1-10"))}))
    unrelated = _both_ways(tmp_path, layer_tar({"app/main.py": b"print(1)\n"}))
    rootfs = merge([(_digest(1), base), (_digest(2), upgrade), (_digest(3), unrelated)])
    assert _names(rootfs) == {"libc6": ("2.36-9", _digest(1)),    # same name+version since layer 1
                              "bash": ("5.2.15-3", _digest(2)),   # upgraded in layer 2
                              "curl": ("7.88.1-10", _digest(2))}
    assert rootfs.distro == ("debian", "12")
    libc = next(f.package for f in rootfs.packages if f.package.name == "libc6")
    assert (libc.upstream, libc.arch, libc.db) == ("glibc", "amd64", "/var/lib/dpkg/status")


def test_a_package_removed_and_installed_again_is_introduced_by_the_later_layer(tmp_path):
    layers = [layer_tar({"var/lib/dpkg/status": dpkg_status(dpkg_paragraph("vim", "9.0"))}),
              layer_tar({"var/lib/dpkg/status": dpkg_status()}),
              layer_tar({"var/lib/dpkg/status": dpkg_status(dpkg_paragraph("vim", "9.0"))})]
    rootfs = merge([(_digest(n), _both_ways(tmp_path, tar)) for n, tar in enumerate(layers)])
    assert _names(rootfs) == {"vim": ("9.0", _digest(2))}


def test_whiteouts_and_opaque_directories_remove_packages_of_lower_layers(tmp_path):
    site = "usr/lib/python3/dist-packages"
    base = _both_ways(tmp_path, layer_tar({
        f"{site}/keep-1.0.dist-info/METADATA": dist_info("keep", "1.0"),
        f"{site}/dropped-2.0.dist-info/METADATA": dist_info("dropped", "2.0"),
        f"{site}/old.egg-info/PKG-INFO": dist_info("old-egg", "0.1"),
        "opt/app/node_modules/left/package.json": package_json("left", "1.0.0"),
        "opt/app/node_modules/hidden/package.json": package_json("hidden", "1.0.0"),
        "var/lib/dpkg/status.d/tzdata": dpkg_status(dpkg_paragraph("tzdata", "2024a", arch="all")),
        "var/lib/dpkg/status.d/tzdata.md5sums": b"0123 usr/share/zoneinfo/UTC\n"}))
    assert sorted(base.dbs) == [
        "opt/app/node_modules/hidden/package.json", "opt/app/node_modules/left/package.json",
        f"{site}/dropped-2.0.dist-info/METADATA", f"{site}/keep-1.0.dist-info/METADATA",
        f"{site}/old.egg-info/PKG-INFO", "var/lib/dpkg/status.d/tzdata"]
    deleting = _both_ways(tmp_path, layer_tar(
        {"opt/app/node_modules/left/package.json": package_json("left", "1.0.0"),
         "var/lib/dpkg/status.d/base": dpkg_status(dpkg_paragraph("base-files", "12.4", arch="amd64"))},
        whiteouts=(f"{site}/dropped-2.0.dist-info", f"{site}/old.egg-info", "var/lib/dpkg/status.d/tzdata"),
        opaque=("opt/app/node_modules",)))
    assert deleting.whiteouts == [f"{site}/dropped-2.0.dist-info", f"{site}/old.egg-info",
                                  "var/lib/dpkg/status.d/tzdata"]
    assert deleting.opaque == ["opt/app/node_modules"]
    rootfs = merge([(_digest(1), base), (_digest(2), deleting)])
    # `left` was written again under the opaque directory: present all along,
    # so still layer 1's.
    assert _names(rootfs) == {"keep": ("1.0", _digest(1)), "left": ("1.0.0", _digest(1)),
                              "base-files": ("12.4", _digest(2))}


def test_apk_database_and_alpine_release(tmp_path):
    facts = _both_ways(tmp_path, layer_tar({
        "lib/apk/db/installed": apk_installed(("busybox", "1.36.1-r15"), ("musl", "1.2.4_git20230717-r4")),
        "usr/lib/os-release": b'ID=alpine\nVERSION_ID=3.19.1\n'}))
    rootfs = merge([(_digest(7), facts)])
    busybox = rootfs.packages[0].package
    assert (busybox.name, busybox.version, busybox.arch, busybox.license, busybox.upstream) == (
        "busybox", "1.36.1-r15", "x86_64", "MIT", "busybox-src")
    assert [f.package.name for f in rootfs.packages] == ["busybox", "musl"]
    assert rootfs.distro == ("alpine", "3.19.1")


def test_nested_node_modules_and_scoped_packages_but_not_files_inside_a_package(tmp_path):
    facts = _both_ways(tmp_path, layer_tar({
        "app/node_modules/express/package.json": package_json("express", "4.18.2", license="MIT"),
        "app/node_modules/express/node_modules/debug/package.json": package_json("debug", "2.6.9"),
        "app/node_modules/@types/node/package.json": package_json("@types/node", "20.1.0"),
        "app/node_modules/express/lib/package.json": package_json("not-a-package", "0.0.0"),
        "app/package.json": package_json("the-app", "1.0.0"),
        "app/node_modules/broken/package.json": b"{not json",
        "app/node_modules/noversion/package.json": package_json("noversion", "")}))
    rootfs = merge([(_digest(1), facts)])
    assert sorted((f.package.name, f.package.version) for f in rootfs.packages) == [
        ("@types/node", "20.1.0"), ("debug", "2.6.9"), ("express", "4.18.2")]
    # A broken database still stands for its path (it hides a lower copy).
    assert facts.dbs["app/node_modules/broken/package.json"] == []


def test_an_opaque_root_hides_everything_below(tmp_path):
    lower = _both_ways(tmp_path, layer_tar({"var/lib/dpkg/status": dpkg_status(dpkg_paragraph("a", "1"))}))
    rootfs = merge([(_digest(1), lower), (_digest(2), facts_of_tar(io.BytesIO(layer_tar(opaque=("",)))))])
    assert rootfs.packages == ()


@pytest.mark.parametrize("name", ["var/lib/dpkg/statusx", "var/lib/dpkg/status.d/x/y", "x.dist-info/RECORD",
                                  "node_modules/package.json", "lib/apk/db/installed.old"])
def test_files_that_are_not_databases_are_not_read(tmp_path, name):
    facts = facts_of_tar(io.BytesIO(layer_tar({name: dpkg_status(dpkg_paragraph("x", "1"))})))
    assert facts.dbs == {}


def test_a_snapshot_deeper_than_the_recursion_limit_is_read(tmp_path):
    fs = tmp_path / "deep"
    fs.mkdir()
    depth = sys.getrecursionlimit() + 100
    fd = os.open(fs, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.makedirs(f"/proc/self/fd/{fd}/node_modules/deep", exist_ok=True)
        with open(f"/proc/self/fd/{fd}/node_modules/deep/package.json", "wb") as file:
            file.write(package_json("deep", "1.0.0"))
    finally:
        os.close(fd)
    try:
        facts = facts_of_snapshot(fs)
        assert [p.name for found in facts.dbs.values() for p in found] == ["deep"]
    finally:
        for level in range(depth, -1, -1):  # shutil.rmtree recurses too
            shutil.rmtree(fs / "/".join(["d"] * level), ignore_errors=level == 0)


def test_a_database_hard_linked_to_another_is_read_from_the_tar_as_from_the_snapshot(tmp_path):
    out = io.BytesIO()
    metadata = dist_info("linked", "2.0")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in [("a", tarfile.DIRTYPE, ""), ("a/x-2.0.dist-info", tarfile.DIRTYPE, ""),
                                 ("a/x-2.0.dist-info/METADATA", tarfile.REGTYPE, ""),
                                 ("b", tarfile.DIRTYPE, ""), ("b/x-2.0.dist-info", tarfile.DIRTYPE, ""),
                                 ("b/x-2.0.dist-info/METADATA", tarfile.LNKTYPE, "a/x-2.0.dist-info/METADATA")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.REGTYPE:
                info.size = len(metadata)
            tar.addfile(info, io.BytesIO(metadata) if kind == tarfile.REGTYPE else None)
    facts = _both_ways(tmp_path, out.getvalue())
    assert {path: [p.name for p in found] for path, found in facts.dbs.items()} == {
        "a/x-2.0.dist-info/METADATA": ["linked"], "b/x-2.0.dist-info/METADATA": ["linked"]}
