"""`-o type=local` and `-o type=tar` into destinations that hold symlinks to
the host (issue 14, attack 8): a destination in a checkout someone else
filled, or one a previous export filled with the image's own symlinks.
The victims are a host directory and file under tmp_path; each test checks
them afterwards. Also what a local export writes as root: no setuid/setgid
bit and no device node unless `preserve-special=true`, files owned by the
user behind sudo."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from builder.build import build
from builder.errors import PybuildError
from builder.export.rootfs import write_local
from security import hostile
from security.hostile import layer, member
from fixtures.victims import tree_state


@pytest.fixture
def victims(tmp_path):
    """(host directory, host file); unchanged at the end, or the test fails."""
    top = tmp_path / "victim"
    (top / "dir").mkdir(parents=True)
    (top / "file").write_text("host data\n")
    os.chmod(top / "file", 0o644)
    before = tree_state(top)
    yield top / "dir", top / "file"
    assert tree_state(top) == before, "a victim on the host changed"


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / f"ctx-{len(list(tmp_path.glob('ctx-*')))}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def _build(tmp_path, dockerfile: str, output: str):
    return build(_context(tmp_path, dockerfile), root=tmp_path / "root", outputs=[output])


IMAGE = """FROM {base}
RUN mkdir -p /a /r && echo x > /a/x && echo r > /r/x && echo f > /f && echo g > /g && echo h > /h
"""


def test_symlinks_already_in_the_destination_are_replaced_not_followed(tmp_path, busybox_image, victims):
    victim_dir, victim_file = victims
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(str(victim_dir), out / "a")  # where the image has a directory
    os.symlink("../victim/dir", out / "r")  # the relative form
    os.symlink(str(victim_file), out / "f")  # where the image has a file
    os.symlink("../victim/file", out / "g")
    (out / "h").mkdir()  # a directory where the image has a file
    os.symlink(str(victim_file), out / "h" / "inner")
    os.symlink(str(victim_file), out / "untouched")  # not in the image: left alone
    _build(tmp_path, IMAGE.format(base=busybox_image.ref), f"type=local,dest={out}")
    for name, body in [("a/x", "x\n"), ("r/x", "r\n"), ("f", "f\n"), ("g", "g\n"), ("h", "h\n")]:
        path = out / name
        assert not path.is_symlink() and path.read_text() == body, name
    assert (out / "a").is_dir() and not (out / "a").is_symlink()
    assert os.readlink(out / "untouched") == str(victim_file)


def test_two_builds_into_one_destination_do_not_chain(tmp_path, busybox_image, victims):
    victim_dir, victim_file = victims
    out = tmp_path / "out"
    first = f"FROM {busybox_image.ref}\nRUN ln -s {victim_dir} /a && ln -s {victim_file} /f && ln -s {victim_dir} /d\n"
    _build(tmp_path, first, f"type=local,dest={out}")
    assert os.readlink(out / "a") == str(victim_dir)  # the image's symlinks, exported as symlinks
    second = f"FROM {busybox_image.ref}\nRUN mkdir /a && echo x > /a/x && echo f > /f && echo d > /d\n"
    _build(tmp_path, second, f"type=local,dest={out}")
    assert (out / "a/x").read_text() == "x\n" and not (out / "a").is_symlink()
    assert (out / "f").read_text() == "f\n" and (out / "d").read_text() == "d\n"


def _special_image(registry, tmp_path) -> str:
    return hostile.push_image(registry, tmp_path / "layout", [layer(
        member("s/", tarfile.DIRTYPE, mode=0o2775),
        member("s/suid", data=b"#!/bin/sh\nid\n", mode=0o4755),
        member("s/sgid", data=b"#!/bin/sh\nid\n", mode=0o2711, uid=1000),
        member("s/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        member("s/loop", tarfile.BLKTYPE, mode=0o660, major=7, minor=0),
        member("s/fifo", tarfile.FIFOTYPE, mode=0o644),
        member("s/owned", data=b"mine\n", mode=0o640, uid=1000),
        member("s/link", tarfile.SYMTYPE, link="owned", uid=1000),
    )])


def test_local_export_drops_setuid_and_devices_and_gives_files_to_the_sudo_user(
        tmp_path, registry, busybox_image, monkeypatch):
    ref = _special_image(registry, tmp_path)
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1234")
    out = tmp_path / "new" / "out"
    _build(tmp_path, f"FROM {ref}\n", f"type=local,dest={out}")
    s = out / "s"
    assert sorted(os.listdir(s)) == ["fifo", "link", "owned", "sgid", "suid"]  # no device node
    assert stat.S_IMODE(os.lstat(s / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(s / "sgid").st_mode) == 0o711
    assert stat.S_IMODE(os.lstat(s).st_mode) == 0o775
    assert stat.S_ISFIFO(os.lstat(s / "fifo").st_mode)
    for path in [tmp_path / "new", out, *out.rglob("*")]:
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (1234, 1234), path
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), path


def test_preserve_special_writes_the_image_as_it_is(tmp_path, registry, busybox_image, monkeypatch):
    ref = _special_image(registry, tmp_path)
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1234")
    out = tmp_path / "out"
    _build(tmp_path, f"FROM {ref}\n", f"type=local,dest={out},preserve-special=true")
    s = out / "s"
    assert stat.S_IMODE(os.lstat(s / "suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(s / "sgid").st_mode) == 0o2711
    assert stat.S_IMODE(os.lstat(s).st_mode) == 0o2775
    null = os.lstat(s / "null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(os.lstat(s / "loop").st_mode)
    assert (os.lstat(s / "owned").st_uid, os.lstat(s / "link").st_uid, os.lstat(s / "suid").st_uid) == (1000, 1000, 0)


def test_without_sudo_the_files_are_pybuilds_own(tmp_path, busybox_image, monkeypatch):
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)
    out = tmp_path / "out"
    _build(tmp_path, f"FROM {busybox_image.ref}\nRUN echo x > /x && chown 1000:1000 /x\n", f"type=local,dest={out}")
    st = os.lstat(out / "x")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_tar_output_replaces_a_symlink_at_its_destination(tmp_path, busybox_image, victims, monkeypatch):
    _, victim_file = victims
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "1234")
    out = tmp_path / "out.tar"
    os.symlink(str(victim_file), out)
    _build(tmp_path, IMAGE.format(base=busybox_image.ref), f"type=tar,dest={out}")
    assert not out.is_symlink()
    assert (os.lstat(out).st_uid, os.lstat(out).st_gid) == (1234, 1234)
    with tarfile.open(out) as tar:
        assert tar.extractfile("a/x").read() == b"x\n"


def test_bad_destinations_are_one_clear_error(tmp_path, busybox_image):
    (tmp_path / "a-dir.tar").mkdir()
    (tmp_path / "a-file").write_text("x")
    dockerfile = IMAGE.format(base=busybox_image.ref)
    for output, message in [(f"type=tar,dest={tmp_path / 'a-dir.tar'}", "is a directory"),
                            (f"type=local,dest={tmp_path / 'a-file'}", "is a file"),
                            (f"type=tar,dest={tmp_path / 'x.tar'},preserve-special=true", "unknown option")]:
        with pytest.raises(PybuildError, match=message):
            _build(tmp_path, dockerfile, output)
    assert (tmp_path / "a-file").read_text() == "x" and not (tmp_path / "x.tar").exists()


# straight through the local writer ---------------------------------------------------


def test_writer_keeps_hard_links_user_xattrs_only_and_replaces_dirs(tmp_path, victims):
    victim_dir, victim_file = victims
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/one").write_text("linked\n")
    os.link(src / "d/one", src / "d/two")
    os.setxattr(src / "d/one", "user.note", b"kept")
    os.setxattr(src / "d/one", "security.capability",
                bytes.fromhex("01000002" "80000000" "00000000" "00000000" "00000000"))  # cap_setuid+ep
    (src / "was-dir").write_text("now a file\n")
    out = tmp_path / "out"
    (out / "was-dir").mkdir(parents=True)
    os.symlink(str(victim_file), out / "was-dir" / "inner")
    os.symlink(str(victim_dir), out / "d")
    write_local(src, out, owner=(1234, 1234), preserve_special=False)
    one, two = os.lstat(out / "d/one"), os.lstat(out / "d/two")
    assert one.st_ino == two.st_ino and one.st_nlink == 2
    assert os.listxattr(out / "d/one") == ["user.note"]
    assert (out / "was-dir").read_text() == "now a file\n"
    write_local(src, out / "again", owner=None, preserve_special=True)
    assert "security.capability" in os.listxattr(out / "again/d/one")


def _deep(top: Path, depth: int) -> None:
    """top/d/d/.../d/leaf, made through fds (os.makedirs recurses)."""
    top.mkdir()
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fds[-1])
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fds[-1]), "w") as f:
            f.write("deep\n")
    finally:
        for fd in fds:
            os.close(fd)


def _remove_deep(top: Path, depth: int) -> None:
    """rm -r of what _deep made (shutil.rmtree recurses too)."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        os.unlink("leaf", dir_fd=fds[-1])
        for level in range(depth, 0, -1):
            os.rmdir("d", dir_fd=fds[level - 1])
    finally:
        for fd in fds:
            os.close(fd)
    top.rmdir()


def test_writer_survives_a_deep_tree(tmp_path):
    depth = 1100  # deeper than Python's recursion limit
    _deep(tmp_path / "src", depth)
    try:
        write_local(tmp_path / "src", tmp_path / "out", owner=(0, 0), preserve_special=False)
        fd = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(depth):
                inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = inner
            with open(os.open("leaf", os.O_RDONLY, dir_fd=fd)) as f:
                assert f.read() == "deep\n"
        finally:
            os.close(fd)
    finally:
        _remove_deep(tmp_path / "src", depth)
        if (tmp_path / "out").exists():
            _remove_deep(tmp_path / "out", depth)
