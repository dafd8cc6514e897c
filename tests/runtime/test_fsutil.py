"""resolve_in_root and remove_tree on real directories."""

import os
import tempfile
from pathlib import Path

import pytest

from runtime.fsutil import SymlinkLoop, remove_tree, resolve_in_root


@pytest.fixture
def scratch():
    path = Path(tempfile.mkdtemp(prefix="pybuild-fsutil-"))
    yield path
    remove_tree(path)
    assert not path.exists()


def test_plain_paths_resolve_under_root(scratch):
    (scratch / "etc").mkdir()
    assert resolve_in_root(scratch, "/etc/passwd") == scratch / "etc/passwd"
    assert resolve_in_root(scratch, "etc//./passwd/") == scratch / "etc/passwd"
    assert resolve_in_root(scratch, "/") == scratch


def test_dotdot_never_climbs_above_root(scratch):
    assert resolve_in_root(scratch, "/../../../etc") == scratch / "etc"
    assert resolve_in_root(scratch, "/a/../../b") == scratch / "b"


def test_symlinks_are_followed_as_if_root_were_slash(scratch):
    (scratch / "real").mkdir()
    os.symlink("/real", scratch / "abs")
    os.symlink("../../../real", scratch / "rel")
    os.symlink("/", scratch / "top")
    os.symlink("abs/sub", scratch / "chain")
    assert resolve_in_root(scratch, "/abs/x") == scratch / "real/x"
    assert resolve_in_root(scratch, "/rel/x") == scratch / "real/x"
    assert resolve_in_root(scratch, "/top/top/etc") == scratch / "etc"
    assert resolve_in_root(scratch, "/chain") == scratch / "real/sub"


def test_follow_final_false_keeps_the_link(scratch):
    os.symlink("/elsewhere", scratch / "link")
    assert resolve_in_root(scratch, "/link", follow_final=False) == scratch / "link"
    assert resolve_in_root(scratch, "/link") == scratch / "elsewhere"


def test_symlink_loop_is_an_error(scratch):
    os.symlink("b", scratch / "a")
    os.symlink("a", scratch / "b")
    with pytest.raises(SymlinkLoop):
        resolve_in_root(scratch, "/a/x")


def test_remove_tree_handles_locked_dirs_and_never_follows_links(scratch):
    outside = scratch / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = scratch / "tree"
    (tree / "locked/inner").mkdir(parents=True)
    (tree / "locked/inner/f").write_text("x")
    os.symlink(outside, tree / "link")
    os.symlink(outside, tree / "locked/link")
    os.chmod(tree / "locked/inner", 0)
    os.chmod(tree / "locked", 0o500)
    remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "x"
    remove_tree(tree)  # absent: nothing to do
    os.symlink(outside, scratch / "toplink")
    remove_tree(scratch / "toplink")
    assert outside.is_dir()


def test_remove_tree_of_any_depth_and_path_length(scratch):
    # 1500 levels of 9-byte names: deeper than Python's recursion limit and
    # a path three times PATH_MAX, which only directory fds can reach.
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1500):
            os.mkdir("deeper-id", dir_fd=fd)
            child = os.open("deeper-id", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        os.symlink(str(scratch / "outside"), "link", dir_fd=fd)
    finally:
        os.close(fd)
    (scratch / "outside").mkdir()
    remove_tree(scratch / "deeper-id")
    assert os.listdir(scratch) == ["outside"]
    remove_tree(scratch / "missing" / "below")  # a parent absent: nothing to do
