"""COPY, ADD, COPY <<EOF and WORKDIR writing through symlinks that a base
image or an earlier RUN planted (issue 14: every COPY destination goes
through runtime.confine). The planted links aim at victims on the host,
made under tmp_path: a directory, a file, and a path that does not exist
yet. Each test checks the victims afterwards, and that the files landed
where docker puts them: inside the image, at the path the link names there.
Then the same, straight through copy_into / plan_direct / DirectCopy / make_dir.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest

from builder.context.trees import BuildContext
from builder.errors import StepFailed
from builder.ops.copy import copy_into, make_dir, plan_direct, write_files
from builder.ops.copy_options import CopyError
from e2e.helpers import build_image
from frontend.ops import InlineFile
from security import hostile
from security.hostile import layer, member
from fixtures.victims import tree_state


@pytest.fixture
def victims(tmp_path):
    """(host directory, host file in it); their state is checked at the end."""
    top = tmp_path / "victim"
    top.mkdir()
    (top / "file").write_text("host data\n")
    os.chmod(top / "file", 0o600)
    before = tree_state(top)
    yield top, top / "file"
    assert tree_state(top) == before, "a victim on the host changed"


def _climb(path: Path) -> str:
    """`../` enough times to leave any tree, then `path`: the relative form."""
    return "../" * 12 + str(path).lstrip("/")


DOCKERFILE = """\
FROM {base}
{plant}
COPY a.txt /abs/copied.txt
COPY dir/ /up/dircopy/
COPY dir/ /abs/direct/
COPY a.txt /filelink
COPY a.txt /dangling
COPY a.txt /dangdir/sub/in.txt
ADD a.txt /abs/added.txt
COPY <<EOF /heredoc-link
heredoc
EOF
COPY <<EOF /abs/heredoc.txt
heredoc two
EOF
COPY a.txt /existing/
WORKDIR /dangwork/deeper
RUN cat {victim}/copied.txt {victim}/dircopy/d.txt {victim}/file > /seen.txt
"""


def _plant_by_run(victim: Path) -> str:
    return "\n".join([
        f"RUN ln -s {victim} /abs && ln -s {_climb(victim)} /up && ln -s {victim}/file /filelink",
        f"RUN ln -s {victim}/new-file /dangling && ln -s {victim}/new-dir /dangdir && ln -s {victim}/wd /dangwork",
        f"RUN ln -s {victim}/file /heredoc-link && mkdir /existing && ln -s {victim}/file /existing/a.txt",
    ])


def _plant_in_layer(victim: Path) -> list:
    return [
        member("abs", tarfile.SYMTYPE, link=str(victim)),
        member("up", tarfile.SYMTYPE, link=_climb(victim)),
        member("filelink", tarfile.SYMTYPE, link=f"{victim}/file"),
        member("dangling", tarfile.SYMTYPE, link=f"{victim}/new-file"),
        member("dangdir", tarfile.SYMTYPE, link=f"{victim}/new-dir"),
        member("dangwork", tarfile.SYMTYPE, link=f"{victim}/wd"),
        member("heredoc-link", tarfile.SYMTYPE, link=f"{victim}/file"),
        member("existing/", tarfile.DIRTYPE, mode=0o755),
        member("existing/a.txt", tarfile.SYMTYPE, link=f"{victim}/file"),
    ]


@pytest.mark.parametrize("planted_by", ["run", "base image"])
def test_copy_add_heredoc_workdir_through_planted_links_stay_in_the_image(
        tmp_path, registry, busybox_image, victims, planted_by):
    victim, _ = victims
    if planted_by == "run":
        base, plant = busybox_image.ref, _plant_by_run(victim)
    else:
        base, plant = hostile.push_image(registry, tmp_path / "layout", [layer(*_plant_in_layer(victim))]), ""
    built = build_image(tmp_path, tmp_path / "root", DOCKERFILE.format(base=base, plant=plant, victim=victim),
                        files={"a.txt": "payload\n", "dir/d.txt": "in dir\n"})
    inside = lambda path: built.read_text(f"{victim}/{path}")  # noqa: E731 - the image's own copy of that path
    # Where BuildKit puts them: each link resolved inside the image.
    assert inside("copied.txt") == inside("added.txt") == "payload\n"
    assert inside("dircopy/d.txt") == inside("direct/d.txt") == "in dir\n"
    assert inside("file") == "heredoc\n"  # /filelink, then /heredoc-link: the image's file, twice rewritten
    assert inside("new-file") == "payload\n"  # a dangling link leads to where it points
    assert inside("new-dir/sub/in.txt") == "payload\n"
    assert inside("heredoc.txt") == "heredoc two\n"
    assert os.path.isdir(built.path(f"{victim}/wd/deeper"))
    assert built.read_text("/seen.txt") == "payload\nin dir\nheredoc\n"
    # A symlink exactly where a file is copied is replaced, not written through.
    existing = built.path("/existing/a.txt")
    assert not existing.is_symlink() and existing.read_text() == "payload\n"
    assert os.readlink(built.path("/abs")) == str(victim)  # the planted links themselves stay


def test_merging_a_directory_into_a_planted_link_is_refused(tmp_path, busybox_image, victims):
    victim, _ = victims
    dockerfile = f"""FROM {busybox_image.ref}
RUN mkdir /app && ln -s {victim} /app/sub
COPY tree/ /app/
"""
    with pytest.raises(StepFailed, match="cannot copy to non-directory: /app/sub") as failed:
        build_image(tmp_path, tmp_path / "root", dockerfile, files={"tree/sub/x": "x\n"})
    assert isinstance(failed.value.cause, CopyError)


# straight through the copy functions -------------------------------------------------


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


@pytest.fixture
def context(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "dir/sub").mkdir(parents=True)
    (ctx / "a.txt").write_text("payload\n")
    (ctx / "dir/sub/x").write_text("x\n")
    os.link(ctx / "dir/sub/x", ctx / "dir/hard")
    os.symlink("/etc/shadow", ctx / "dir/abs-link")
    return ctx


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_copy_into_follows_planted_links_inside_only(rootfs, context, victims, link):
    victim, victim_file = victims
    target = str(victim) if link == "absolute" else _climb(victim)
    os.symlink(target, rootfs / "d")
    os.symlink(f"{victim}/file", rootfs / "f")
    os.symlink(f"{victim}/gone/deeper", rootfs / "dangling")
    selection = BuildContext(context)
    copy_into(rootfs, selection.select(["dir"]), "/d/")
    copy_into(rootfs, selection.select(["a.txt"]), "/f")
    copy_into(rootfs, selection.select(["a.txt"]), "/dangling")
    copy_into(rootfs, selection.select(["dir"]), "/d/parents/", parents=True)
    write_files(rootfs, (InlineFile("h.txt", b"inline\n"),), "/d/")
    os.symlink(f"{victim}/wd", rootfs / "dangling-dir")
    made = make_dir(rootfs, "/dangling-dir/deeper")
    inside = rootfs / str(victim).lstrip("/")
    assert (inside / "sub/x").read_text() == "x\n"
    assert os.lstat(inside / "hard").st_ino == os.lstat(inside / "sub/x").st_ino
    assert os.readlink(inside / "abs-link") == "/etc/shadow"
    assert (inside / "file").read_text() == "payload\n"
    assert (inside / "gone/deeper").read_text() == "payload\n"
    assert (inside / "parents/dir/sub/x").read_text() == "x\n"
    assert (inside / "h.txt").read_text() == "inline\n"
    assert made == f"{victim}/wd/deeper" and (inside / "wd/deeper").is_dir()


def test_a_planted_link_where_parents_makes_a_directory_is_refused(rootfs, context, victims):
    victim, _ = victims
    (rootfs / "dest").mkdir()
    os.symlink(str(victim), rootfs / "dest/dir")
    with pytest.raises(CopyError, match="cannot copy to non-directory: /dest/dir"):
        copy_into(rootfs, BuildContext(context).select(["dir/sub/x"]), "/dest/", parents=True)


def test_a_file_in_the_way_of_a_destination_is_refused(rootfs, context, victims):
    (rootfs / "plain").write_text("a file\n")
    with pytest.raises(CopyError, match="not a directory"):
        copy_into(rootfs, BuildContext(context).select(["a.txt"]), "/plain/sub/")
    with pytest.raises(CopyError, match="cannot copy to non-directory: /plain"):
        copy_into(rootfs, BuildContext(context).select(["dir"]), "/plain")
    os.symlink("loop", rootfs / "loop")
    with pytest.raises(CopyError, match="too many levels of symbolic links"):
        copy_into(rootfs, BuildContext(context).select(["a.txt"]), "/loop/x")


def test_direct_copy_resolves_in_the_view_and_never_follows_in_the_upper(tmp_path, rootfs, context, victims):
    victim, _ = victims
    os.symlink(str(victim), rootfs / "d")
    selection = BuildContext(context).select(["dir"])
    plan = plan_direct(rootfs, selection, "/d/new/")
    assert plan is not None and plan.dest_rel == f"{victim}/new".lstrip("/")
    # An upper where that path holds a planted link: refused, nothing written.
    upper = tmp_path / "upper"
    (upper / str(victim).lstrip("/")).mkdir(parents=True)
    os.symlink(str(victim), upper / plan.dest_rel)
    with pytest.raises(CopyError, match="cannot copy to non-directory"):
        plan.run(upper, selection)
    os.unlink(upper / plan.dest_rel)
    (upper / plan.dest_rel).mkdir()
    plan.run(upper, selection)
    assert (upper / plan.dest_rel / "sub/x").read_text() == "x\n"


def test_a_directory_swapped_for_a_link_mid_copy_is_not_written_through(rootfs, tmp_path, victims, monkeypatch):
    """Between two files of one directory, something swaps the destination
    directory for a link to the host (the worst moment an attacker running
    beside the copy could pick). The rest goes into the directory the copy
    holds open, never through the link."""
    victim, _ = victims
    ctx = tmp_path / "swap-ctx"
    (ctx / "tree/sub").mkdir(parents=True)
    (ctx / "tree/sub/a").write_text("first\n")
    (ctx / "tree/sub/b").write_text("second\n")
    os.chmod(ctx / "tree/sub", 0o777)
    swapped = []

    def copy_then_swap(copy):
        def run(src, dst, size):
            copy(src, dst, size)
            if not swapped:
                os.rename(rootfs / "app/sub", rootfs / "app/moved")
                os.symlink(str(victim), rootfs / "app/sub")
                swapped.append(True)
        return run

    import builder.ops.copier as copy_module
    import runtime.fsutil as fsutil_module
    for module in (copy_module, fsutil_module):
        if hasattr(module, "copy_data"):
            monkeypatch.setattr(module, "copy_data", copy_then_swap(module.copy_data))
    copy_into(rootfs, BuildContext(ctx).select(["tree"]), "/app/")
    assert swapped
    assert (rootfs / "app/moved/b").read_text() == "second\n"
    assert stat.S_IMODE(os.lstat(rootfs / "app/moved").st_mode) == 0o777
