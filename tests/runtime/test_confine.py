"""runtime.confine: a tree's planted symlinks never take an operation out of
it, with openat2 and with the O_NOFOLLOW walk used where the kernel lacks it.
Each test plants the attack and checks a victim outside the tree."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import stat

import pytest

from runtime import confine
from runtime.confine import Refused, Tree, check_name, remove, set_fd_metadata, set_metadata
from runtime.confine import entries
from fixtures.victims import tree_state


@pytest.fixture(params=["openat2", "walk"])
def mode(request, monkeypatch):
    if request.param == "openat2":
        assert confine.HAVE_OPENAT2, "this kernel has openat2 (5.6+): the probe must find it"
    else:
        monkeypatch.setattr(confine, "HAVE_OPENAT2", False)
    return request.param


@pytest.fixture
def victim(tmp_path):
    """A host directory and file outside the tree, with their state."""
    host = tmp_path / "host"
    host.mkdir(mode=0o755)
    (host / "secret").write_text("host data")
    os.chmod(host / "secret", 0o600)
    return host


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    with Tree(root) as t:
        yield t


def test_absolute_and_climbing_symlinks_resolve_inside(mode, tree, victim):
    root = tree.path
    os.symlink(str(victim), os.path.join(root, "abs"))
    os.symlink("../../../../host", os.path.join(root, "up"))
    before = tree_state(victim)
    for link in ("abs", "up"):
        fd, name = tree.make_parent(f"{link}/secret")
        try:
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
            os.write(out, b"inside")
            os.close(out)
        finally:
            os.close(fd)
    assert tree_state(victim) == before
    # Both links were followed as if the tree were `/`: abs -> /host..., up -> /host.
    assert open(os.path.join(root, str(victim).lstrip("/"), "secret"), "rb").read() == b"inside"
    assert open(os.path.join(root, "host", "secret"), "rb").read() == b"inside"
    assert tree.join("up/secret") == "/host/secret"


def test_open_follows_final_symlink_inside(mode, tree, victim):
    root = tree.path
    os.makedirs(os.path.join(root, str(victim).lstrip("/")))
    with open(os.path.join(root, str(victim).lstrip("/"), "secret"), "w") as f:
        f.write("tree's copy")
    os.symlink(str(victim / "secret"), os.path.join(root, "link"))
    fd = tree.open("link")
    try:
        assert os.read(fd, 100) == b"tree's copy"
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        tree.open("link", os.O_RDONLY | os.O_NOFOLLOW)


def test_symlink_loop_is_an_error(mode, tree):
    os.symlink("b", os.path.join(tree.path, "a"))
    os.symlink("a", os.path.join(tree.path, "b"))
    with pytest.raises(OSError):
        tree.open("a/x")
    with pytest.raises(OSError):
        tree.make_dirs("a/x")


def test_make_dirs_follows_dangling_link_inside(mode, tree, victim):
    os.symlink(str(victim / "newdir"), os.path.join(tree.path, "d"))
    before = tree_state(victim)
    fd = tree.make_dirs("d/sub", mode=0o750, owner=(12, 34))
    os.close(fd)
    assert tree_state(victim) == before
    made = os.path.join(tree.path, str(victim).lstrip("/"), "newdir", "sub")
    st = os.lstat(made)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750 and (st.st_uid, st.st_gid) == (12, 34)


@pytest.mark.parametrize("link", ["abs", "up", "chain"])
def test_make_target_parent_follows_final_links_inside(mode, tree, victim, link):
    root = tree.path
    os.symlink(str(victim / "secret"), os.path.join(root, "abs"))  # dangling inside the tree
    os.symlink("../../../host/secret", os.path.join(root, "up"))
    os.symlink("up", os.path.join(root, "chain"))
    before = tree_state(victim)
    fd, name = tree.make_target_parent(link, owner=(5, 6))
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        os.close(out)
        landed = tree.image_path_of(fd) + "/" + name.decode()
    finally:
        os.close(fd)
    assert tree_state(victim) == before
    assert landed == (str(victim) if link == "abs" else "/host") + "/secret"
    assert os.lstat(os.path.join(root, landed.lstrip("/").split("/")[0])).st_uid == 5  # made, with the owner


def test_make_target_parent_refuses_root_and_loops(mode, tree):
    os.symlink("/", os.path.join(tree.path, "top"))
    os.symlink("loop", os.path.join(tree.path, "loop"))
    with pytest.raises(Refused):
        tree.make_target_parent("top")
    with pytest.raises(OSError):
        tree.make_target_parent("loop")
    fd, name = tree.make_target_parent("plain/new")
    os.close(fd)
    assert name == b"new" and os.path.isdir(os.path.join(tree.path, "plain"))


def test_make_dirs_refuses_a_file_in_the_way(mode, tree):
    open(os.path.join(tree.path, "f"), "w").close()
    with pytest.raises(Refused):
        tree.make_dirs("f/x")


def test_set_metadata_never_reaches_through_a_symlink(mode, tree, victim):
    os.symlink(str(victim / "secret"), os.path.join(tree.path, "s"))
    before = tree_state(victim)
    fd, name = tree.parent("s")
    try:
        set_metadata(fd, name, uid=1234, gid=1234, mode=0o6777, mtime_ns=10**9,
                     xattrs=[("trusted.test", b"x")])
    finally:
        os.close(fd)
    assert tree_state(victim) == before
    st = os.lstat(os.path.join(tree.path, "s"))
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (1234, 1234)
    assert os.getxattr(os.path.join(tree.path, "s"), "trusted.test", follow_symlinks=False) == b"x"


def test_set_metadata_on_a_file(mode, tree):
    path = os.path.join(tree.path, "f")
    open(path, "w").close()
    fd, name = tree.parent("/f")
    try:
        set_metadata(fd, name, uid=5, gid=6, mode=0o4755, mtime_ns=2 * 10**9, xattrs=[("user.k", b"v")])
    finally:
        os.close(fd)
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (5, 6, 0o4755, 2 * 10**9)
    assert os.getxattr(path, "user.k") == b"v"


def test_set_fd_metadata_goes_to_the_opened_inode_only(mode, tree, victim):
    # The name is swapped for a symlink to a host file after the open: the
    # fd still names the file opened, and the host file is left alone.
    path = os.path.join(tree.path, "f")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.rename(path, os.path.join(tree.path, "moved"))
        os.symlink(str(victim / "secret"), path)
        before = tree_state(victim)
        set_fd_metadata(fd, uid=5, gid=6, mode=0o4755, mtime_ns=3 * 10**9, atime_ns=4 * 10**9,
                        xattrs=[("user.k", b"v")])
    finally:
        os.close(fd)
    assert tree_state(victim) == before
    st = os.lstat(os.path.join(tree.path, "moved"))
    # mode after owner: the setuid bit survives the chown
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (5, 6, 0o4755)
    assert (st.st_mtime_ns, st.st_atime_ns) == (3 * 10**9, 4 * 10**9)
    assert os.getxattr(os.path.join(tree.path, "moved"), "user.k") == b"v"
    dir_fd = tree.make_dirs("d")
    try:
        set_fd_metadata(dir_fd, mode=0o1777, mtime_ns=10**9)
    finally:
        os.close(dir_fd)
    st = os.lstat(os.path.join(tree.path, "d"))
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid) == (0o1777, 10**9, 0)


def test_remove_unlinks_symlinks_and_keeps_their_targets(mode, tree, victim):
    os.makedirs(os.path.join(tree.path, "d", "sub"))
    os.symlink(str(victim), os.path.join(tree.path, "d", "sub", "to-host"))
    os.symlink(str(victim), os.path.join(tree.path, "top"))
    os.chmod(os.path.join(tree.path, "d", "sub"), 0)
    before = tree_state(victim)
    for name in (b"d", b"top"):
        remove(tree.fd, name)
    assert tree_state(victim) == before
    assert os.listdir(tree.path) == []


def test_parent_of_root_and_dotdot_final_are_refused(mode, tree):
    with pytest.raises(Refused):
        tree.parent("/")
    with pytest.raises(Refused):
        tree.parent("a/..")


def test_magic_links_are_not_followed(tree):
    # A tree symlink to /proc/self/root would be the host's / through a
    # magic link; RESOLVE_IN_ROOT keeps even the plain resolution inside.
    os.symlink("/proc/self/root", os.path.join(tree.path, "p"))
    with pytest.raises(FileNotFoundError):
        tree.open("p/etc/passwd")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/x", "a\0b"])
def test_check_name_refuses(name):
    with pytest.raises(Refused):
        check_name(name)


def test_check_name_accepts_plain():
    assert check_name("file.tar.gz") == b"file.tar.gz"


@pytest.mark.parametrize(
    ("links", "path", "expected"),
    [
        ({}, "/etc/passwd", "/etc/passwd"),
        ({"etc": "/private/etc"}, "/etc/passwd", "/private/etc/passwd"),
        ({"etc": "../../../../private"}, "/etc/passwd", "/private/passwd"),
        ({"a": "/"}, "/a/a/a/b", "/b"),
        ({"a": "b", "b": "/c"}, "/a/x", "/c/x"),
        ({}, "/../../x/./y/..", "/x"),
        ({"d": "/made/later"}, "d/sub", "/made/later/sub"),  # dangling: to what it points at
        ({"etc": "/private/etc"}, "/missing/../etc/x", "/private/etc/x"),
        ({"up": "../../../../.."}, "up/up/tmp", "/tmp"),
    ],
)
def test_join_resolves_inside(mode, tree, links, path, expected):
    for name, target in links.items():
        os.symlink(target, os.path.join(tree.path, name))
    assert tree.join(path) == expected


def test_join_through_real_dirs_files_and_links_to_the_host(mode, tree, victim):
    os.makedirs(os.path.join(tree.path, "private", "etc"))
    os.symlink("../private/etc", os.path.join(tree.path, "private", "up"))
    open(os.path.join(tree.path, "file"), "w").close()
    os.symlink(str(victim), os.path.join(tree.path, "host"))
    before = tree_state(victim)
    assert tree.join("private/up/hosts") == "/private/etc/hosts"
    assert tree.join("file/x/../y") == "/file/y"  # past a non-directory: as written
    assert tree.join("host/secret") == str(victim) + "/secret"  # inside the tree, not the host's
    assert tree_state(victim) == before


def test_join_loop_is_an_error(mode, tree):
    os.symlink("b", os.path.join(tree.path, "a"))
    os.symlink("a", os.path.join(tree.path, "b"))
    with pytest.raises(OSError):
        tree.join("a/x")


def test_open_exact_refuses_every_symlink(mode, tree, victim):
    os.makedirs(os.path.join(tree.path, "a", "b"))
    open(os.path.join(tree.path, "a", "b", "f"), "w").close()
    os.symlink("a", os.path.join(tree.path, "link"))
    os.symlink("f", os.path.join(tree.path, "a", "b", "final"))
    os.symlink(str(victim), os.path.join(tree.path, "host"))
    fd = tree.open_exact("/a/b/f")
    try:
        assert os.fstat(fd).st_ino == os.lstat(os.path.join(tree.path, "a", "b", "f")).st_ino
    finally:
        os.close(fd)
    for path in ("link/b/f", "a/b/final", "host/secret", "host"):
        for flags in (os.O_PATH, os.O_RDONLY):
            with pytest.raises(OSError) as refused:
                tree.open_exact(path, flags)
            assert refused.value.errno == errno.ELOOP, (path, flags)
    with pytest.raises(Refused):
        tree.open_exact("a/../a/b")
    fd = tree.open_exact("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.fstat(fd).st_ino == os.fstat(tree.fd).st_ino
    finally:
        os.close(fd)


# -- what the kernel says where the walk must say it too (no openat2)

@pytest.mark.parametrize("path", ["dot", "slash", "chain", "f/f/a", "f/a", "lf/a"])
def test_a_file_where_a_directory_is_needed_is_enotdir(mode, tree, path):
    open(os.path.join(tree.path, "f"), "w").close()
    os.symlink("f/.", os.path.join(tree.path, "dot"))
    os.symlink("f/", os.path.join(tree.path, "slash"))
    os.symlink("dot", os.path.join(tree.path, "chain"))
    os.symlink("f", os.path.join(tree.path, "lf"))
    for flags in (os.O_RDONLY, os.O_PATH):
        with pytest.raises(NotADirectoryError):
            os.close(tree.open(path, flags))


# -- trees deeper than Python's recursion limit, with few fds

DEEP = 1500


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _make_deep(top: str, name: str, depth: int, files: tuple[str, ...] = ()) -> None:
    """top/name/name/... `depth` levels, `files` in the deepest (os.makedirs
    recurses once per level)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        for file in files:
            os.close(os.open(file, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def test_make_dirs_of_a_deep_path_through_dangling_links(mode, tree, victim):
    deep = "/".join(["a"] * DEEP)
    os.makedirs(os.path.join(tree.path, "a", "a"))
    os.symlink(str(victim / "made"), os.path.join(tree.path, "a", "a", "a"))  # dangling, absolute
    before, fds = tree_state(victim), _open_fds()
    fd = tree.make_dirs(deep, mode=0o750, owner=(7, 8))
    try:
        assert tree.image_path_of(fd) == str(victim) + "/made/" + "/".join(["a"] * (DEEP - 3))
        assert (os.fstat(fd).st_uid, stat.S_IMODE(os.fstat(fd).st_mode)) == (7, 0o750)
    finally:
        os.close(fd)
    assert _open_fds() == fds and tree_state(victim) == before
    fd = tree.make_dirs(deep)  # there now: opened as it is
    os.close(fd)
    remove(tree.fd, b"a")
    remove(tree.fd, os.fsencode(str(victim).lstrip("/").split("/")[0]))
    assert os.listdir(tree.path) == []


def test_make_dirs_gives_up_on_a_long_chain_of_dangling_links(mode, tree):
    for n in range(100):
        os.symlink(f"/l{n + 1}", os.path.join(tree.path, f"l{n}"))
    with pytest.raises(OSError) as failed:
        tree.make_dirs("l0/x")
    assert failed.value.errno == errno.ELOOP


def test_remove_a_deep_tree_with_a_locked_directory_and_links_out(mode, tree, victim):
    _make_deep(tree.path, "d", DEEP, ("f",))
    os.symlink(str(victim), os.path.join(tree.path, *["d"] * DEEP, "to-host"))
    middle = os.path.join(tree.path, *["d"] * (DEEP // 2))
    os.chmod(middle, 0)
    before, fds = tree_state(victim), _open_fds()
    remove(tree.fd, b"d")
    assert os.listdir(tree.path) == [] and tree_state(victim) == before and _open_fds() == fds


@contextlib.contextmanager
def _few_fds(headroom: int = 60):
    """RLIMIT_NOFILE just above the fds this process holds: an operation
    holding one fd per level of a deep path fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_deep_paths_resolve_with_few_fds(mode, tree):
    _make_deep(tree.path, "a", DEEP, ("f",))
    os.symlink("/a", os.path.join(tree.path, *["a"] * 1000, "up"))
    deep = "/".join(["a"] * DEEP)
    with _few_fds():
        assert tree.join(deep + "/f") == "/" + deep + "/f"
        assert tree.join("/".join(["a"] * 1000) + "/up/" + "/".join(["a"] * 400)) == "/" + "/".join(["a"] * 401)
        assert tree.join("/".join(["a"] * 1200) + "/../../x") == "/" + "/".join(["a"] * 1198) + "/x"
        fd = tree.open(deep + "/f")
        os.close(fd)
        fd = tree.open_dir("/".join(["a"] * 1000) + "/up/" + "/".join(["a"] * 400) + "/..")
        assert tree.image_path_of(fd) == "/" + "/".join(["a"] * 400)
        os.close(fd)
    remove(tree.fd, b"a")


def test_walk_holds_few_fds_and_sees_everything(tree):
    _make_deep(tree.path, "w", DEEP, ("f",))
    open(os.path.join(tree.path, "top"), "w").close()
    fds, most, seen, left = _open_fds(), 0, [], 0
    for parent, name, is_dir in confine.walk(tree.fd):
        most = max(most, _open_fds())
        if is_dir is None:
            left += 1
        else:
            seen.append((name, is_dir))
    assert sorted(seen) == sorted([("w", True)] * DEEP + [("f", False), ("top", False)])
    assert left == DEEP
    assert most - fds <= entries._WALK_OPEN_DIRS + 2 and _open_fds() == fds
    remove(tree.fd, b"w")


def test_walk_never_returns_to_a_directory_moved_away(tree):
    # A directory taken elsewhere while the walk is below it: the walk,
    # back to an ancestor whose fd it closed, finds `..` is not that
    # ancestor and stops rather than go on in the wrong directory.
    _make_deep(tree.path, "m", 100)
    moved = os.path.join(tree.path, *["m"] * 50)
    depth = 0
    with pytest.raises(OSError) as failed:
        for parent, name, is_dir in confine.walk(tree.fd):
            depth += 1 if is_dir else -1 if is_dir is None else 0
            if depth == 100:  # far below the fds the walk holds
                os.rename(moved, os.path.join(tree.path, "elsewhere"))
    assert failed.value.errno == errno.ESTALE
    remove(tree.fd, b"m")
    remove(tree.fd, b"elsewhere")


def test_set_metadata_names_a_refused_xattr_and_skips_an_unsupported_one(tree):
    os.symlink("t", os.path.join(tree.path, "s"))
    with pytest.raises(PermissionError, match="setxattr user.x"):
        set_metadata(tree.fd, b"s", xattrs=[("user.x", b"v")])
    fd = os.open(os.path.join(tree.path, "f"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="setxattr bogus.name") as failed:
            set_fd_metadata(fd, xattrs=[("bogus.name", b"v")])
        assert failed.value.errno == errno.EOPNOTSUPP
        set_fd_metadata(fd, xattrs=[("bogus.name", b"v"), ("user.k", b"kept")], skip_unsupported_xattrs=True)
    finally:
        os.close(fd)
    assert os.listxattr(os.path.join(tree.path, "f")) == ["user.k"]
