"""write_layer / apply_layer against real overlay upperdirs, GNU tar and
Python's tarfile as independent readers, and hostile archives."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from runtime.errors import UnsafeLayer
from runtime.fsutil import remove_tree
from runtime.layer import apply_layer, layer_is_empty, write_layer
from runtime.snapshot import OverlaySnapshotter

CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


def _mounts_under(top: Path) -> list[str]:
    # Only under our own directory: other processes may mount meanwhile.
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return [point for point in points if point == str(top) or point.startswith(f"{top}/")]


@pytest.fixture
def scratch():
    path = Path(tempfile.mkdtemp(prefix="pybuild-layer-"))
    yield path
    assert _mounts_under(path) == [], "a mount was left behind"
    remove_tree(path)
    assert not path.exists()


def _layer_bytes(fs, **kwargs) -> bytes:
    out = io.BytesIO()
    write_layer(fs, out, **kwargs)
    return out.getvalue()


@pytest.fixture
def overlay_upper(scratch):
    """An upperdir produced by the kernel: deletions, an opaque directory,
    hardlinks, a symlink, a fifo, a device, a capability and owners."""
    snaps = OverlaySnapshotter(scratch / "snapshots")
    lower = snaps.create()
    fs = snaps.fs_path(lower)
    (fs / "etc").mkdir()
    (fs / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (fs / "etc/doomed").write_text("bye")
    (fs / "cache/deep").mkdir(parents=True)
    (fs / "cache/deep/junk").write_text("junk")
    (fs / "cache/old").write_text("old")
    (fs / "bin").mkdir()
    (fs / "bin/ping").write_bytes(b"\x7fELF" + b"\0" * 5000)
    upper = snaps.create()
    with snaps.mount([lower], upper) as merged:
        (merged / "etc/doomed").unlink()
        remove_tree(merged / "cache")
        (merged / "cache").mkdir()
        (merged / "cache/fresh").write_text("fresh")
        (merged / "data").write_bytes(os.urandom(300_000))
        os.link(merged / "data", merged / "etc/data-link")
        os.symlink("../data", merged / "etc/data-sym")
        os.mkfifo(merged / "fifo")
        os.mknod(merged / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chown(merged / "bin/ping", 0, 0)
        os.chmod(merged / "bin/ping", 0o4755)
        os.setxattr(merged / "bin/ping", "security.capability", CAP_NET_RAW)
        (merged / "owned").write_text("mine")
        os.chown(merged / "owned", 1234, 5678)
    snaps.commit(upper)
    return snaps.fs_path(upper)


def test_overlay_upper_becomes_an_oci_layer(scratch, overlay_upper):
    tar_path = scratch / "layer.tar"
    with open(tar_path, "wb") as out:
        write_layer(overlay_upper, out)

    listing = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-tvf", tar_path],
                             check=True, capture_output=True, text=True).stdout.splitlines()
    names = [line.split()[5] for line in listing]
    assert names.index("cache/") + 1 == names.index("cache/.wh..wh..opq")
    assert "etc/.wh.doomed" in names
    assert names == sorted(names, key=lambda n: n.rstrip("/").split("/"))  # depth-first, by name
    by_name = {line.split()[5]: line for line in listing}
    assert by_name["etc/data-link"].startswith("h") and by_name["etc/data-link"].endswith("link to data")
    assert by_name["etc/data-sym"].startswith("l") and by_name["etc/data-sym"].endswith("-> ../data")
    assert by_name["fifo"].startswith("p")
    assert by_name["null"].startswith("c") and "1,3" in by_name["null"]
    assert by_name["owned"].split()[1] == "1234/5678"
    assert by_name["bin/ping"].startswith("-rwsr-xr-x")
    assert "doomed" not in " ".join(n for n in names if n != "etc/.wh.doomed")

    with tarfile.open(tar_path) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert members["bin/ping"].pax_headers["SCHILY.xattr.security.capability"].encode(
            "utf-8", "surrogateescape") == CAP_NET_RAW
        for member in archive.getmembers():
            assert member.uname == "" and member.gname == ""
            assert not any(key.startswith("SCHILY.xattr.trusted.overlay") for key in member.pax_headers)
            assert "atime" not in member.pax_headers and "ctime" not in member.pax_headers
        assert members["etc/data-link"].islnk() and members["etc/data-link"].linkname == "data"
        assert archive.extractfile("data").read() == (overlay_upper / "data").read_bytes()

    # GNU tar extracts it with the capability intact.
    out_dir = scratch / "extracted"
    out_dir.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xf", tar_path, "-C", out_dir], check=True)
    assert os.getxattr(out_dir / "bin/ping", "security.capability") == CAP_NET_RAW
    assert os.stat(out_dir / "data").st_ino == os.stat(out_dir / "etc/data-link").st_ino


def test_same_files_same_bytes(scratch, overlay_upper):
    first = _layer_bytes(overlay_upper)
    assert _layer_bytes(overlay_upper) == first
    copy = scratch / "copy"
    subprocess.run(["cp", "-a", "--preserve=all", overlay_upper, copy], check=True)
    for dirpath, dirnames, filenames in os.walk(copy):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(0, 4_000_000_000 * 10**9), follow_symlinks=False)
    assert _layer_bytes(copy) != first
    assert _layer_bytes(copy, clamp_mtime=1_000_000) == _layer_bytes(overlay_upper, clamp_mtime=1_000_000)
    with tarfile.open(fileobj=io.BytesIO(_layer_bytes(copy, clamp_mtime=1_000_000))) as archive:
        assert {m.mtime for m in archive.getmembers() if not m.name.split("/")[-1].startswith(".wh.")} == {1_000_000}


def test_apply_then_write_round_trips(scratch, overlay_upper):
    original = _layer_bytes(overlay_upper)
    target = scratch / "applied"
    target.mkdir()
    apply_layer(io.BytesIO(original), target)
    assert _layer_bytes(target) == original
    whiteout = os.lstat(target / "etc/doomed")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(target / "cache", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(target / "bin/ping", "security.capability") == CAP_NET_RAW
    assert stat.S_IMODE(os.stat(target / "bin/ping").st_mode) == 0o4755
    assert os.stat(target / "owned").st_uid == 1234


def test_long_and_odd_names_and_big_ids(scratch):
    fs = scratch / "fs"
    deep = fs / "/".join(["d" * 60] * 5)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    odd = os.fsencode(str(fs)) + b"/caf\xe9-" + b"n" * 120
    with open(odd, "wb") as handle:
        handle.write(b"latin1")
    os.chown(odd, 3_000_000, 3_000_001)
    os.symlink("t" * 150, fs / "long-link")
    data = _layer_bytes(fs)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert str(deep.relative_to(fs)) + "/f" in members
    assert members["long-link"].linkname == "t" * 150
    odd_member = next(m for m in members.values() if m.name.startswith("caf"))
    assert (odd_member.uid, odd_member.gid) == (3_000_000, 3_000_001)
    target = scratch / "applied"
    target.mkdir()
    apply_layer(io.BytesIO(data), target)
    assert _layer_bytes(target) == data


def test_layer_is_empty(scratch):
    assert layer_is_empty(scratch)
    (scratch / "x").write_text("")
    assert not layer_is_empty(scratch)


def _hostile(*entries) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(extra)
                archive.addfile(info, io.BytesIO(extra))
            else:
                info.linkname = extra
                archive.addfile(info)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("entries", [
    [("../escape", tarfile.REGTYPE, b"x")],
    [("a/../../escape", tarfile.REGTYPE, b"x")],
    [("/abs", tarfile.REGTYPE, b"x")],
    [("link", tarfile.SYMTYPE, "../outside"), ("link/escape", tarfile.REGTYPE, b"x")],
    [("link", tarfile.SYMTYPE, "/"), ("link/escape", tarfile.REGTYPE, b"x")],
    [("hard", tarfile.LNKTYPE, "../outside/victim")],
    [("hard", tarfile.LNKTYPE, "later"), ("later", tarfile.REGTYPE, b"x")],
    [("link", tarfile.SYMTYPE, "../outside/victim"), ("hard", tarfile.LNKTYPE, "link/x")],
], ids=["dotdot", "nested-dotdot", "absolute", "through-symlink", "through-root-symlink",
        "hardlink-escape", "hardlink-forward", "hardlink-through-symlink"])
def test_hostile_layers_are_refused(scratch, entries):
    outside = scratch / "outside"
    outside.mkdir()
    (outside / "victim").write_text("safe")
    target = scratch / "fs"
    target.mkdir()
    with pytest.raises(UnsafeLayer):
        apply_layer(_hostile(*entries), target)
    assert os.listdir(outside) == ["victim"] and (outside / "victim").read_text() == "safe"
    assert not (scratch / "escape").exists()


def test_symlink_replaced_by_directory_is_not_followed(scratch):
    outside = scratch / "outside"
    outside.mkdir()
    target = scratch / "fs"
    target.mkdir()
    apply_layer(_hostile(("d", tarfile.SYMTYPE, "../outside"), ("d", tarfile.DIRTYPE, ""),
                         ("d/f", tarfile.REGTYPE, b"in")), target)
    assert os.listdir(outside) == []
    assert (target / "d/f").read_text() == "in" and not (target / "d").is_symlink()


def test_layer_xattrs_cannot_forge_overlay_metadata(scratch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.ok": "1"}
        archive.addfile(info)
    buffer.seek(0)
    target = scratch / "fs"
    target.mkdir()
    apply_layer(buffer, target)
    assert os.listxattr(target / "d") == ["user.ok"]
