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
