"""ADD's local archives and base layers attacked with a few lines of tar
(issue 14, attack 1), through a real build and straight through each
extractor (builder.ops.archive.extract, runtime.layer.apply_layer). The
victims are host files and directories under tmp_path; each test checks
their lstat and content afterwards. Legitimate archives still extract as
docker does."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from builder.errors import PybuildError
from builder.ops import archive
from e2e.helpers import build_image
from runtime import confine
from runtime.errors import UnsafeLayer
from runtime.layer import apply_layer
from security import hostile
from security.hostile import layer, member
from fixtures.victims import tree_state

T = 1_500_000_000


@pytest.fixture
def host(tmp_path) -> Path:
    """The victims: a host file, a host directory holding `x/`, a symlink."""
    top = tmp_path / "host"
    (top / "dir" / "x").mkdir(parents=True)
    (top / "file").write_text("host data\n")
    (top / "dir" / "x" / "inside").write_text("host inside\n")
    os.symlink("file", top / "link")
    for path, mode in [(top / "file", 0o600), (top / "dir" / "x", 0o700), (top / "dir", 0o700)]:
        os.chmod(path, mode)
        os.utime(path, ns=(T * 10**9, T * 10**9))
    return top


@pytest.fixture(params=["openat2", "walk"])
def confine_mode(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(confine, "HAVE_OPENAT2", False)
    return request.param


def hardlink_to_host_symlink(host: Path) -> list:
    # The attack 1: `s` a symlink to a host file, `h` a hard link to
    # `s` with mode 0666: metadata applied through the link reached the host.
    return [member("s", tarfile.SYMTYPE, link=str(host / "file")),
            member("h", tarfile.LNKTYPE, link="s", mode=0o666, uid=1234)]


def dir_replaced_by_symlink(host: Path) -> list:
    # Its variant: `d/`, `d/x/` (0777), then `d` a symlink to a host
    # directory: deferred directory metadata went to the host's dir/x and dir.
    return [member("d/", tarfile.DIRTYPE, mode=0o755),
            member("d/x/", tarfile.DIRTYPE, mode=0o777, uid=1234),
            member("d", tarfile.SYMTYPE, link=str(host / "dir"))]


ATTACKS = {"hardlink-to-host-symlink": hardlink_to_host_symlink, "dir-replaced-by-symlink": dir_replaced_by_symlink}


def add_directly(tmp_path: Path, data: bytes, dest: Path, **kw) -> None:
    source = tmp_path / "archive.tar"
    source.write_bytes(data)
    dest.mkdir(exist_ok=True)
    try:
        archive.extract(source, dest, **kw)
    finally:
        source.unlink()


def layer_directly(data: bytes, dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    apply_layer(io.BytesIO(data), dest)


def check_extracted(dest: Path, attack: str, host: Path, *, owners: bool) -> None:
    """What docker leaves: the links stored, never followed."""
    if attack == "hardlink-to-host-symlink":
        s, h = os.lstat(dest / "s"), os.lstat(dest / "h")
        assert stat.S_ISLNK(h.st_mode) and s.st_ino == h.st_ino  # h links the symlink itself
        assert os.readlink(dest / "h") == str(host / "file")
        if owners:
            assert h.st_uid == 1234  # the link's header owns the (symlink) inode, lchown as docker
    else:
        assert os.readlink(dest / "d") == str(host / "dir")


# --- the attacks ------------------------------------------------------------


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_add_extractor_never_changes_host_files(tmp_path, host, confine_mode, attack):
    before = tree_state(host)
    dest = tmp_path / "dest"
    add_directly(tmp_path, layer(*ATTACKS[attack](host)), dest)
    assert tree_state(host) == before
    check_extracted(dest, attack, host, owners=True)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_layer_extractor_never_changes_host_files(tmp_path, host, confine_mode, attack):
    before = tree_state(host)
    dest = tmp_path / "dest"
    layer_directly(layer(*ATTACKS[attack](host)), dest)
    assert tree_state(host) == before
    check_extracted(dest, attack, host, owners=True)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_add_in_a_build_never_changes_host_files(tmp_path, host, busybox_image, attack):
    before = tree_state(host)
    check = ("test -L /d/h && test \"$(readlink /d/h)\" = " + str(host / "file")
             if attack == "hardlink-to-host-symlink" else "test -L /d/d && test ! -e /d/d/x")
    build_image(tmp_path, tmp_path / "root", f"FROM {busybox_image.ref}\nADD evil.tar /d/\nRUN {check}\n",
                files={"evil.tar": layer(*ATTACKS[attack](host))}, export=False, local=False)
    assert tree_state(host) == before


def test_base_layer_in_a_build_never_changes_host_files(tmp_path, host, registry, busybox_image):
    before = tree_state(host)
    members = hardlink_to_host_symlink(host) + dir_replaced_by_symlink(host)
    ref = hostile.push_image(registry, tmp_path / "layout", [layer(*members)])
    build_image(tmp_path, tmp_path / "root", f"FROM {ref}\nRUN test -L /h && test -L /d && test ! -e /d/x\n",
                export=False, local=False)
    assert tree_state(host) == before


# --- more of the same family, straight through both extractors ------------------------


def _cases(host: Path) -> dict:
    """name -> (members, what ADD does, what a base layer does): "ok" or "refused"."""
    victim, victim_dir = str(host / "file"), str(host / "dir")
    return {
        # a hard link naming a host file, by absolute path or by climbing
        "hardlink-absolute": ([member("h", tarfile.LNKTYPE, link=victim, mode=0o666)], "refused", "refused"),
        "hardlink-climbing": ([member("h", tarfile.LNKTYPE, link="../" * 8 + victim.lstrip("/"))],
                              "refused", "refused"),
        # a member replacing a symlink is written in its place, not through it
        "file-over-symlink": ([member("s", tarfile.SYMTYPE, link=victim),
                               member("s", data=b"evil", mode=0o4777, uid=99)], "ok", "ok"),
        "dir-over-symlink": ([member("s", tarfile.SYMTYPE, link=victim_dir),
                              member("s/", tarfile.DIRTYPE, mode=0o777, uid=99)], "ok", "ok"),
        "fifo-over-symlink": ([member("s", tarfile.SYMTYPE, link=victim),
                               member("s", tarfile.FIFOTYPE, mode=0o666)], "ok", "ok"),
        # a planted symlink on the way: ADD follows it as if the destination
        # were `/`, a layer refuses it
        "write-through-parent": ([member("s", tarfile.SYMTYPE, link=victim_dir),
                                  member("s/x/inside", data=b"evil", mode=0o666)], "ok", "refused"),
        # a deep directory replaced by a link to the host, then written below
        "deep-replaced": ([member("a/", tarfile.DIRTYPE), member("a/b/", tarfile.DIRTYPE, mode=0o777),
                           member("a/b/c/", tarfile.DIRTYPE, mode=0o777),
                           member("a", tarfile.SYMTYPE, link=victim_dir),
                           member("a/x/", tarfile.DIRTYPE, mode=0o777, uid=5)], "ok", "refused"),
        # a file replaced by a link to the host, then hard linked with a mode
        "hardlink-to-replaced-file": ([member("f", data=b"mine"),
                                       member("f", tarfile.SYMTYPE, link=victim),
                                       member("h", tarfile.LNKTYPE, link="f", mode=0o4777, uid=7)], "ok", "ok"),
        # a hard link to a directory member
        "hardlink-to-dir": ([member("d/", tarfile.DIRTYPE), member("h", tarfile.LNKTYPE, link="d")],
                            "refused", "refused"),
        # a hard link to a member removed with its directory
        "hardlink-to-removed": ([member("d/", tarfile.DIRTYPE), member("d/f", data=b"x"),
                                 member("d", tarfile.SYMTYPE, link=victim_dir),
                                 member("h", tarfile.LNKTYPE, link="d/f", mode=0o666)],
                                "refused", "refused"),
    }


@pytest.mark.parametrize("case", sorted(_cases(Path("/x"))))
@pytest.mark.parametrize("extractor", ["add", "layer"])
def test_hostile_members_never_reach_the_host(tmp_path, host, confine_mode, case, extractor):
    members, add_does, layer_does = _cases(host)[case]
    data = layer(*members)
    dest = tmp_path / "dest"
    before = tree_state(tmp_path, skip=dest)
    expected = add_does if extractor == "add" else layer_does
    refusal = archive.ArchiveError if extractor == "add" else UnsafeLayer
    if expected == "refused":
        with pytest.raises(refusal):
            add_directly(tmp_path, data, dest) if extractor == "add" else layer_directly(data, dest)
    else:
        add_directly(tmp_path, data, dest) if extractor == "add" else layer_directly(data, dest)
    after = tree_state(tmp_path, skip=dest)
    # tmp_path's own mtime moves with dest's creation; nothing else may
    before.pop(str(tmp_path)), after.pop(str(tmp_path))
    assert after == before
    if expected == "ok" and case.endswith("-over-symlink"):
        assert not os.path.islink(dest / "s")


def test_add_hard_link_to_a_file_not_from_the_archive_is_refused(tmp_path, host):
    # The destination's own files are no link targets: only earlier members.
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine").write_text("image file\n")
    os.chmod(dest / "mine", 0o600)
    before = tree_state(dest)
    with pytest.raises(archive.ArchiveError, match="not an earlier"):
        add_directly(tmp_path, layer(member("h", tarfile.LNKTYPE, link="mine", mode=0o4777, uid=9)), dest)
    assert tree_state(dest) == before


def test_add_refusal_in_a_build_is_one_clear_error(tmp_path, host, busybox_image):
    data = layer(member("h", tarfile.LNKTYPE, link=str(host / "file"), mode=0o666))
    with pytest.raises(PybuildError, match=r"ADD failed: evil.tar: .*not an earlier"):
        build_image(tmp_path, tmp_path / "root", f"FROM {busybox_image.ref}\nADD evil.tar /d/\n",
                    files={"evil.tar": data}, export=False, local=False)


@pytest.mark.parametrize("extractor", ["add", "layer"])
def test_sparse_member_stays_sparse(tmp_path, extractor):
    # A 1 GiB file of holes is a 10 KiB archive: written out, it would fill
    # the disk under the root.
    size = 1 << 30
    data = hostile.sparse_layer(tmp_path / "sparse", "big", size, b"middle")
    dest = tmp_path / "dest"
    add_directly(tmp_path, data, dest) if extractor == "add" else layer_directly(data, dest)
    info = os.lstat(dest / "big")
    assert info.st_size == size and info.st_blocks * 512 < 1 << 20
    with open(dest / "big", "rb") as handle:
        handle.seek(size // 2)
        assert handle.read(6) == b"middle"


# --- legitimate archives extract as docker does --------------------------------------


def _legit() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, uid=0, mtime=T):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.uid, info.gid, info.mtime = kind, link, mode, uid, uid, mtime
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("a/", tarfile.DIRTYPE, mode=0o750, uid=3, mtime=T + 1)
        add("a/up", tarfile.SYMTYPE, link="..")              # points at the destination itself
        add("a/b/c/deep", data=b"deep")                        # a/b and a/b/c unlisted
        add("abs", tarfile.SYMTYPE, link="/etc/passwd")      # stored, never followed
        add("f", data=b"shared", mode=0o600, uid=7)
        add("g", tarfile.LNKTYPE, link="f", mode=0o4750, uid=8, mtime=T + 2)  # sets f's inode
        add("ro/", tarfile.DIRTYPE, mode=0o555, mtime=T + 3)
        add("ro/inside", data=b"in a read-only dir")
    return out.getvalue()


def _check_legit(dest: Path, *, through_up: bool) -> None:
    a = os.lstat(dest / "a")
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_mtime) == (0o750, 3, T + 1)
    assert os.readlink(dest / "a/up") == ".."
    for parent in ("a/b", "a/b/c"):
        st = os.lstat(dest / parent)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)
    assert (dest / "a/b/c/deep").read_bytes() == b"deep"
    assert os.readlink(dest / "abs") == "/etc/passwd"
    f, g = os.lstat(dest / "f"), os.lstat(dest / "g")
    assert f.st_ino == g.st_ino and f.st_nlink == 2
    assert (stat.S_IMODE(f.st_mode), f.st_uid, f.st_mtime) == (0o4750, 8, T + 2)
    ro = os.lstat(dest / "ro")
    assert (stat.S_IMODE(ro.st_mode), ro.st_mtime) == (0o555, T + 3)
    if through_up:
        assert (dest / "via-up").read_bytes() == b"through the link"


def _through_up() -> bytes:
    # ADD follows a planted link inside the destination: a/up -> .. is dest.
    return layer(member("u/", tarfile.DIRTYPE), member("u/up", tarfile.SYMTYPE, link=".."),
                 member("u/up/via-up", data=b"through the link"))


def test_legitimate_archive_through_the_add_extractor(tmp_path, confine_mode):
    dest = tmp_path / "dest"
    add_directly(tmp_path, _legit(), dest)
    add_directly(tmp_path, _through_up(), tmp_path / "dest2")
    _check_legit(dest, through_up=False)
    assert (tmp_path / "dest2/via-up").read_bytes() == b"through the link"


def test_legitimate_archive_through_the_layer_extractor(tmp_path, confine_mode):
    dest = tmp_path / "dest"
    layer_directly(_legit(), dest)
    _check_legit(dest, through_up=False)


def test_legitimate_archive_in_a_build(tmp_path, busybox_image):
    built = build_image(tmp_path, tmp_path / "root", f"FROM {busybox_image.ref}\nADD ok.tar /d/\n"
                        "ADD up.tar /d/\nRUN test -f /d/a/b/c/deep && test \"$(cat /d/a/up/f)\" = shared\n",
                        files={"ok.tar": _legit(), "up.tar": _through_up()}, export=False)
    dest = built.path("/d")
    _check_legit(dest, through_up=True)
