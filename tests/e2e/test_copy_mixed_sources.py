"""COPY and ADD with sources of different kinds in one instruction
(heredocs, context files, URLs), end to end: one layer, the files in
BuildKit's order, --chown/--chmod on every source, and a cache that keys
every source."""

from __future__ import annotations

import stat
import subprocess

import pytest

from builder.root.memo import Observer
from e2e.helpers import BUILD_ERRORS, build_image, tar_bytes

pytestmark = pytest.mark.e2e


def _added_layers(built, base) -> int:
    return len(built.manifest["layers"]) - len(base.layers)


def test_copy_heredoc_and_context_files_in_one_layer(tmp_path, root, busybox_image):
    dockerfile = f"""\
FROM {busybox_image.ref}
ARG WHO=world
COPY --chown=1000:1001 --chmod=0750 <<EOF local.txt conf/ /dest/
hello $WHO
EOF
"""
    files = {"local.txt": "local\n", "conf/a.ini": "a\n", "conf/deep/b.ini": "b\n"}
    built = build_image(tmp_path, root, dockerfile, files=files)
    assert built.read_text("/dest/EOF") == "hello world\n"
    assert built.read_text("/dest/local.txt") == "local\n"
    assert built.read_text("/dest/a.ini") == "a\n"  # a directory source copies its contents
    assert built.read_text("/dest/deep/b.ini") == "b\n"
    assert _added_layers(built, busybox_image) == 1
    history = built.image_config["history"][-1]
    assert history["created_by"] == "COPY --chown=1000:1001 --chmod=0750 local.txt conf/ <<EOF /dest/ # buildkit"
    assert not history.get("empty_layer")

    members = {m.name.rstrip("/"): m for m in built.layer_members(-1)}
    for name in ("dest/EOF", "dest/local.txt", "dest/a.ini", "dest/deep", "dest/deep/b.ini"):
        member = members[name]
        assert (member.uid, member.gid, stat.S_IMODE(member.mode)) == (1000, 1001, 0o750), name

    # Built again: every step cached. A changed context file re-runs the step.
    again = build_image(tmp_path, root, dockerfile, files=files)
    assert again.result.executed_steps == 0
    changed = build_image(tmp_path, root, dockerfile, files={**files, "conf/deep/b.ini": "B\n"})
    assert changed.result.executed_steps == 1
    assert changed.read_text("/dest/deep/b.ini") == "B\n"
    assert changed.read_text("/dest/EOF") == "hello world\n"
    # So does a changed heredoc (here through the ARG it expands).
    other = build_image(tmp_path, root, dockerfile, files=files, build_args={"WHO": "you"})
    assert other.result.executed_steps == 1 and other.read_text("/dest/EOF") == "hello you\n"


def test_heredoc_wins_over_a_context_file_of_the_same_name(tmp_path, root, busybox_image):
    # BuildKit copies the source paths first, then the heredocs.
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ADD EOF <<EOF /d/
inline
EOF
""", files={"EOF": "from the context\n"})
    assert built.read_text("/d/EOF") == "inline\n"


def test_add_several_urls_and_a_local_archive(tmp_path, root, busybox_image, http_files):
    directory, url = http_files
    (directory / "a.txt").write_text("remote a\n")
    remote_tar = tar_bytes({"r/inside.txt": b"remote tar\n"})
    (directory / "remote.tar").write_bytes(remote_tar)
    local_tar = tar_bytes({"l/inside.txt": b"local tar\n"})
    dockerfile = f"""\
FROM {busybox_image.ref}
ADD --chown=1000:1000 {url}/a.txt local.tar {url}/remote.tar /opt/
"""
    built = build_image(tmp_path, root, dockerfile, files={"local.tar": local_tar})
    assert built.read_text("/opt/a.txt") == "remote a\n"
    # ADD unpacks a local archive, never a URL's file.
    assert built.read_text("/opt/l/inside.txt") == "local tar\n"
    assert not built.exists("/opt/local.tar")
    assert built.path("/opt/remote.tar").read_bytes() == remote_tar
    assert _added_layers(built, busybox_image) == 1
    members = {m.name.rstrip("/"): m for m in built.layer_members(-1)}
    for name in ("opt/a.txt", "opt/remote.tar"):
        assert (members[name].uid, members[name].gid) == (1000, 1000), name
    # an archive's members keep its owners, as in BuildKit 0.13 (testdata/compat/add-archive-chown)
    assert (members["opt/l/inside.txt"].uid, members["opt/l/inside.txt"].gid) == (0, 0)

    again = build_image(tmp_path, root, dockerfile, files={"local.tar": local_tar})
    assert again.result.executed_steps == 0
    # A URL's new content re-runs the step (BuildKit re-checks URLs on every build).
    (directory / "a.txt").write_text("remote a, changed\n")
    changed = build_image(tmp_path, root, dockerfile, files={"local.tar": local_tar})
    assert changed.result.executed_steps > 0
    assert changed.read_text("/opt/a.txt") == "remote a, changed\n"


def test_add_two_urls_only(tmp_path, root, busybox_image, http_files):
    directory, url = http_files
    (directory / "one.txt").write_text("1\n")
    (directory / "two.txt").write_text("2\n")
    dockerfile = f"FROM {busybox_image.ref}\nADD --chmod=0644 {url}/one.txt {url}/two.txt /dl/\n"
    built = build_image(tmp_path, root, dockerfile)
    assert built.read_text("/dl/one.txt") == "1\n" and built.read_text("/dl/two.txt") == "2\n"
    assert stat.S_IMODE(built.path("/dl/one.txt").stat().st_mode) == 0o644
    assert _added_layers(built, busybox_image) == 1


def test_mixed_sources_need_a_directory_destination(tmp_path, root, busybox_image):
    with pytest.raises(BUILD_ERRORS, match="destination must be a directory and end with a /"):
        build_image(tmp_path, root, f"FROM {busybox_image.ref}\nCOPY <<EOF a.txt /file\nx\nEOF\n",
                    files={"a.txt": "a"}, export=False, local=False)


def test_the_memo_sees_every_context_part_and_refuses_urls(tmp_path, root, busybox_image, http_files):
    directory, url = http_files
    (directory / "r.txt").write_text("r\n")
    observer = Observer()
    built = build_image(tmp_path, root, f"FROM {busybox_image.ref}\nCOPY <<EOF a.txt sub/ /d/\nx\nEOF\n",
                        files={"a.txt": "a\n", "sub/b.txt": "b\n"}, observer=observer)
    assert {str(built.context / "a.txt"), str(built.context / "sub" / "b.txt")} <= set(observer.paths)
    assert observer.eligible

    observer = Observer()
    build_image(tmp_path, root, f"FROM {busybox_image.ref}\nADD {url}/r.txt a.txt /d/\n",
                files={"a.txt": "a\n"}, observer=observer)
    assert not observer.eligible  # a URL is checked on every build, as BuildKit does


def test_add_git_local_and_heredoc(tmp_path, root, busybox_image, git_daemon):
    base, url = git_daemon
    repo = base / "mixed.git"
    repo.mkdir()
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.txt").write_text("guide\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=repo, check=True,
                       capture_output=True)
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ADD --chown=1000:1000 {url}/mixed.git#main:docs local.txt <<EOF /src/
inline
EOF
""", files={"local.txt": "local\n"})
    assert built.read_text("/src/guide.txt") == "guide\n"
    assert built.read_text("/src/local.txt") == "local\n"
    assert built.read_text("/src/EOF") == "inline\n"
    assert _added_layers(built, busybox_image) == 1
    members = {m.name.rstrip("/"): m for m in built.layer_members(-1)}
    assert all(members[f"src/{n}"].uid == 1000 for n in ("guide.txt", "local.txt", "EOF"))
