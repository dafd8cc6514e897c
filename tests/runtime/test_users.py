"""USER and --chown resolution against a rootfs (BuildKit/runc semantics)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runtime.errors import UnknownUser
from runtime.users import UnknownGroup, User, resolve_chown, resolve_user


@pytest.fixture
def root(tmp_path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "# comment\n"
        "root:x:0:0:root:/root:/bin/sh\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
        "broken line\n"
        "svc:x:1001:1002::/srv:/bin/false\n"
        "nohome:x:1003:1003::\n"
    )
    (etc / "group").write_text(
        "root:x:0:\n"
        "wheel:x:10:root,app\n"
        "staff:x:50:app, svc\n"
        "app:x:1000:\n"
        "svcgrp:x:1002:\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", User(0, 0, (0,), "/root")),  # the primary gid leads the groups (containerd)
        ("root", User(0, 0, (0, 10), "/root")),
        ("0", User(0, 0, (0, 10), "/root")),
        ("app", User(1000, 1000, (1000, 10, 50), "/home/app")),
        ("1000", User(1000, 1000, (1000, 10, 50), "/home/app")),
        ("svc", User(1001, 1002, (1002, 50), "/srv")),
        # an explicit group: that gid and no supplementary groups (runc)
        ("app:staff", User(1000, 50, (50,), "/home/app")),
        ("app:50", User(1000, 50, (50,), "/home/app")),
        ("app:4242", User(1000, 4242, (4242,), "/home/app")),
        ("1000:staff", User(1000, 50, (50,), "/home/app")),
        # both numeric: BuildKit's fast path, no lookup of groups
        ("1000:1000", User(1000, 1000, (1000,), "/home/app")),
        ("5000:6000", User(5000, 6000, (6000,), "/")),
        # a uid without an entry: gid 0, as runc's defaults have it
        ("5000", User(5000, 0, (0,), "/")),
        ("nohome", User(1003, 1003, (1003,), "/")),
    ],
)
def test_resolve_user(root, spec, expected):
    assert resolve_user(root, spec) == expected


def test_unknown_user(root):
    with pytest.raises(UnknownUser, match="unable to find user nobody: no matching entries in passwd file"):
        resolve_user(root, "nobody")


def test_unknown_group(root):
    with pytest.raises(UnknownGroup, match="unable to find group nogroup: no matching entries in group file") as info:
        resolve_user(root, "app:nogroup")
    assert isinstance(info.value, UnknownUser)


def test_missing_files(tmp_path):
    assert resolve_user(tmp_path, "") == User(0, 0, (0,), "/")
    assert resolve_user(tmp_path, "1000") == User(1000, 0, (0,), "/")
    with pytest.raises(UnknownUser):
        resolve_user(tmp_path, "app")


def test_passwd_symlink_stays_inside_rootfs(tmp_path):
    # /etc/passwd -> /etc/real in the image means ROOT/etc/real, never the host's
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "real").write_text("app:x:4000:4000::/h:/bin/sh\n")
    (tmp_path / "etc" / "passwd").symlink_to("/etc/real")
    (tmp_path / "etc" / "groups").write_text("devs:x:7:app\n")
    (tmp_path / "etc" / "group").symlink_to("../../../../../../etc/groups")
    assert resolve_user(tmp_path, "app") == User(4000, 4000, (4000, 7), "/h")
    with pytest.raises(UnknownUser):
        resolve_user(tmp_path, "root")  # the host's passwd has root; this rootfs has not


def test_passwd_that_is_not_a_file(tmp_path):
    (tmp_path / "etc" / "passwd").mkdir(parents=True)
    (tmp_path / "etc" / "group").symlink_to("group")  # a loop reads as no file, as in runc
    assert resolve_user(tmp_path, "") == User(0, 0, (0,), "/")
    assert resolve_user(tmp_path, "7:7") == User(7, 7, (7,), "/")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("app", (1000, 1000)),
        ("svc", (1001, 1002)),  # the user's primary group
        ("1000", (1000, 1000)),
        ("5000", (5000, 5000)),  # numeric: gid = uid, BuildKit's file op
        ("app:staff", (1000, 50)),
        ("5000:staff", (5000, 50)),
        ("app:77", (1000, 77)),
        ("root:root", (0, 0)),
        ("0:0", (0, 0)),
    ],
)
def test_resolve_chown(root, spec, expected):
    assert resolve_chown(root, spec) == expected


def test_chown_unknown_names_fail(root):
    with pytest.raises(UnknownUser):
        resolve_chown(root, "ghost")
    with pytest.raises(UnknownGroup):
        resolve_chown(root, "app:ghosts")


@pytest.mark.parametrize("plant", ["host-symlink", "fifo", "device"])
def test_passwd_is_read_only_from_a_regular_file_inside_the_rootfs(tmp_path, plant):
    host = tmp_path / "host-passwd"
    host.write_text("hostuser:x:4242:4242::/:/bin/sh\n")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    passwd = rootfs / "etc" / "passwd"
    if plant == "host-symlink":
        passwd.symlink_to(host)  # resolves to rootfs/<host path>: absent
    elif plant == "fifo":
        os.mkfifo(passwd)  # opened for reading, it would block for a writer
    else:
        os.mknod(passwd, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: endless
    with pytest.raises(UnknownUser):
        resolve_user(rootfs, "hostuser")
    assert resolve_user(rootfs, "4242:4242") == User(4242, 4242, (4242,), "/")
