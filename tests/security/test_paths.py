"""Path safety end to end, through `build()`: COPY/ADD destinations through
symlinks of the image, ADD of hostile local archives, context paths and
symlinks that point out of the context, and hostile base image layers.

Every test keeps a canary directory on the host (an absolute host path the
hostile input aims at) and checks it stayed empty, and checks that nothing
named after the test appeared at the host's `/`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from builder.build import build
from builder.errors import PybuildError, StepFailed
from e2e.helpers import build_image
from frontend.errors import ContextError
from runtime.errors import RuntimeFailure
from security import hostile
from security.hostile import layer, member


@pytest.fixture
def canary(tmp_path) -> Path:
    path = tmp_path / "canary"
    path.mkdir()
    yield path
    assert sorted(os.listdir(path)) == [], "something was written outside the image"


def _unique() -> str:
    return f"pybuild-escape-{uuid.uuid4().hex[:12]}"


def _assert_not_on_host(*names: str) -> None:
    for name in names:
        assert not os.path.lexists(f"/{name}"), f"/{name} was written on the host"
        assert not os.path.lexists(f"/tmp/{name}")


def _tar(*members) -> bytes:
    return layer(*members)


# --- COPY / ADD / WORKDIR destinations --------------------------------------------


def test_destinations_through_image_symlinks_stay_in_the_image(tmp_path, busybox_image, canary):
    top, up, host, work = _unique(), _unique(), _unique(), _unique()
    dockerfile = f"""FROM {busybox_image.ref}
RUN ln -s / /escape && ln -s ../../../../../.. /up && ln -s {canary} /hostabs
COPY a.txt /escape/{top}
COPY a.txt /up/{up}
COPY a.txt /hostabs/{host}
ADD a.txt /up/tmp/../../{up}-add
WORKDIR /hostabs/{work}
RUN test -d {canary}/{work} && echo ok > here
"""
    built = build_image(tmp_path, tmp_path / "root", dockerfile, files={"a.txt": "payload\n"})
    assert built.read_text(f"/{top}") == "payload\n"
    assert built.read_text(f"/{up}") == "payload\n"
    assert built.read_text(f"/{up}-add") == "payload\n"
    assert built.read_text(f"{canary}/{host}") == "payload\n"
    assert built.read_text(f"{canary}/{work}/here") == "ok\n"
    _assert_not_on_host(top, up, f"{up}-add")


@pytest.mark.parametrize("members, message", [
    ([member("h", tarfile.LNKTYPE, link="../../../../etc/passwd")], "not an earlier entry"),
], ids=["hardlink-out"])
def test_add_local_tar_escaping_members_are_refused(tmp_path, busybox_image, canary, members, message):
    dockerfile = f"FROM {busybox_image.ref}\nADD evil.tar /d/\n"
    with pytest.raises(PybuildError) as failed:
        build_image(tmp_path, tmp_path / "root", dockerfile, files={"evil.tar": _tar(*members)})
    assert "ADD failed: evil.tar" in str(failed.value)
    assert message in str(failed.value)


def test_add_local_tar_absolute_names_and_symlinks_are_confined(tmp_path, busybox_image, canary):
    name = _unique()
    archive = _tar(
        member(f"/{name}", data=b"absolute\n"),
        member("root", tarfile.SYMTYPE, link="/"),
        member(f"root/{name}-via-root", data=b"via root\n"),
        member("host", tarfile.SYMTYPE, link=str(canary)),
        member("host/evil", data=b"via host link\n"),
        member("up", tarfile.SYMTYPE, link="../../../../../../tmp"),
        member(f"up/{name}-via-up", data=b"via up\n"),
        member(f"../{name}-dotdot", data=b"dotdot\n"),
        member(f"a/../../{name}-nested", data=b"nested\n"),
    )
    dockerfile = f"FROM {busybox_image.ref}\nADD evil.tar /d/\n"
    built = build_image(tmp_path, tmp_path / "root", dockerfile, files={"evil.tar": archive})
    # a leading "/" is dropped; links are followed as if /d were "/"
    assert built.read_text(f"/d/{name}") == "absolute\n"
    assert built.read_text(f"/d/{name}-via-root") == "via root\n"
    assert built.read_text(f"/d{canary}/evil") == "via host link\n"
    assert os.readlink(built.path("/d/host")) == str(canary)
    # a symlink climbing out is stored as it is, as BuildKit stores it
    # (testdata/compat/add-archive-symlink-dotdot), and is no way out
    assert os.readlink(built.path("/d/up")) == "../../../../../../tmp"
    assert built.read_text(f"/d/tmp/{name}-via-up") == "via up\n"
    # names climbing out are cleaned from "/", as BuildKit's chroot resolves
    # them (testdata/compat/add-archive-dotdot-member)
    assert built.read_text(f"/d/{name}-dotdot") == "dotdot\n"
    assert built.read_text(f"/d/{name}-nested") == "nested\n"
    _assert_not_on_host(name, f"{name}-via-root", f"{name}-via-up", f"{name}-dotdot", f"{name}-nested")


# --- the context ------------------------------------------------------------


def test_context_paths_never_leave_the_context(tmp_path, busybox_image):
    secret = f"outside-{uuid.uuid4().hex}"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file.txt").write_text(secret)
    context_files = {"in.txt": "inside\n", "sub/x": "x\n"}
    # build_image writes the context under tmp_path/buildN/context
    for dockerfile in (f"FROM {busybox_image.ref}\nCOPY ../outside/file.txt /x\n",
                       f"FROM {busybox_image.ref}\nCOPY {outside}/file.txt /x\n"):
        with pytest.raises(StepFailed, match="not found") as failed:
            build_image(tmp_path, tmp_path / "root", dockerfile, files=context_files)
        assert isinstance(failed.value.cause, ContextError)

    # symlinks in the context pointing out: followed only as if the context were "/"
    context = tmp_path / "linked"
    (context / "sub").mkdir(parents=True)
    (context / "abs").symlink_to(outside / "file.txt")
    (context / "rel").symlink_to("../outside/file.txt")
    (context / "dir").symlink_to(outside)
    (context / "sub" / "up").symlink_to("../../outside")
    for source in ("abs", "rel", "dir/file.txt", "sub/up/file.txt"):
        (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY {source} /x\n")
        with pytest.raises(StepFailed, match="not found") as failed:
            build(context, root=tmp_path / "root", outputs=[f"type=local,dest={tmp_path / 'never'}"])
        assert isinstance(failed.value.cause, ContextError)
    # copying the whole context keeps the links as links, never their targets
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY . /ctx/\n")
    dest = tmp_path / "rootfs"
    build(context, root=tmp_path / "root", outputs=[f"type=local,dest={dest}"])
    assert os.readlink(dest / "ctx" / "abs") == str(outside / "file.txt")
    assert os.readlink(dest / "ctx" / "rel") == "../outside/file.txt"
    assert (dest / "ctx" / "dir").is_symlink()
    for path in dest.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret.encode() not in path.read_bytes(), path


# --- hostile base images ------------------------------------------------------


def _hostile_cases(canary_path: str):
    return {
        "dotdot": [member(f"../../../../../..{canary_path}/evil", data=b"x")],
        "absolute": [member(f"{canary_path}/evil", data=b"x")],
        "symlink-abs-then-write": [member("s", tarfile.SYMTYPE, link=canary_path),
                                   member("s/evil", data=b"x")],
        "symlink-rel-then-write": [member("s", tarfile.SYMTYPE, link="../../../../../.." + canary_path),
                                   member("s/evil", data=b"x")],
        "hardlink-out": [member("h", tarfile.LNKTYPE, link="../../../../../../etc/passwd")],
        "hardlink-abs": [member("h", tarfile.LNKTYPE, link="/etc/passwd")],
        "bad-whiteout": [member("etc/.wh..", data=b"")],
    }


@pytest.mark.parametrize("case", sorted(_hostile_cases("/x")))
def test_hostile_base_layer_is_refused(tmp_path, registry, busybox_image, canary, case):
    members = _hostile_cases(str(canary))[case]
    ref = hostile.push_image(registry, tmp_path / f"layout-{case}", [layer(*members)])
    root = tmp_path / "root"
    with pytest.raises(StepFailed) as failed:
        build_image(tmp_path, root, f"FROM {ref}\nRUN true\n")
    assert isinstance(failed.value.cause, RuntimeFailure)
    assert str(failed.value).startswith("apply layer: "), failed.value
    # the half-extracted snapshot is gone: only busybox's layer remains
    snapshots = [p for p in (root / "snapshots").iterdir() if not p.name.startswith(".")]
    assert len(snapshots) == 1
    assert not os.path.lexists("/etc/passwd.pybuild-test")


def test_symlink_in_one_layer_write_through_it_in_the_next_is_confined(tmp_path, registry, busybox_image, canary):
    ref = hostile.push_image(registry, tmp_path / "layout", [
        layer(member("s", tarfile.SYMTYPE, link=str(canary))),
        layer(member("s/", tarfile.DIRTYPE, mode=0o755), member("s/evil", data=b"layer two\n")),
    ])
    built = build_image(tmp_path, tmp_path / "root", f"FROM {ref}\nRUN test -f /s/evil && test -d /s\n")
    assert built.read_text("/s/evil") == "layer two\n"


@pytest.mark.parametrize("isolation", ["builtin", "oci"])
def test_device_nodes_and_setuid_files_of_a_base_image(tmp_path, registry, busybox_image, isolation):
    ref = hostile.push_image(registry, tmp_path / "layout", [layer(
        member("hostile/", tarfile.DIRTYPE, mode=0o755),
        member("hostile/mem", tarfile.CHRTYPE, mode=0o666, major=1, minor=1),
        member("hostile/sda", tarfile.BLKTYPE, mode=0o666, major=8, minor=0),
        member("hostile/suid", data=b"#!/bin/sh\nid\n", mode=0o4755),
        member("hostile/open/", tarfile.DIRTYPE, mode=0o777),
    )])
    root = tmp_path / "root"
    # the nodes exist in the image, but a RUN cannot open them
    for device in ("mem", "sda"):
        with pytest.raises(StepFailed, match="did not complete successfully") as failed:
            build_image(tmp_path, root, f"FROM {ref}\nRUN head -c 1 /hostile/{device} > /dev/null\n",
                        isolation=isolation, export=False, local=False)
        assert isinstance(failed.value.cause, RuntimeFailure)
    built = build_image(tmp_path, root, f"FROM {ref}\nRUN stat -c %a:%u /hostile/suid > /mode\n",
                        isolation=isolation, local=True)
    assert built.read_text("/mode") == "4755:0\n"
    # on the host, the setuid-root file and the 0777 dir of the extracted
    # layer are out of reach of every other user
    snapshots = root / "snapshots"
    assert stat.S_IMODE(snapshots.stat().st_mode) == 0o700
    found = [p for p in snapshots.glob("*/fs/hostile/suid")]
    assert found and found[0].stat().st_mode & 0o4000
    as_nobody = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "stat", str(found[0])], capture_output=True, text=True, timeout=10)
    assert as_nobody.returncode != 0 and "Permission denied" in as_nobody.stderr


def test_huge_sparse_file_in_a_base_image_stays_sparse(tmp_path, registry, busybox_image):
    size = 1 << 40  # 1 TiB
    ref = hostile.push_image(registry, tmp_path / "layout",
                             [hostile.sparse_layer(tmp_path / "sparse", "big", size, b"middle")])
    root = tmp_path / "root"
    built = build_image(tmp_path, root, f"FROM {ref}\nRUN stat -c %s /big > /size\n", local=False)
    assert built.result.executed_steps >= 1
    (extracted,) = root.glob("snapshots/*/fs/big")
    info = extracted.stat()
    assert info.st_size == size
    assert info.st_blocks * 512 < 1 << 20  # holes stayed holes
    with open(extracted, "rb") as handle:
        handle.seek(size // 2)
        assert handle.read(6) == b"middle"
