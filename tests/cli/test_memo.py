"""The memo of a no-op rebuild (builder.root.memo): an identical command whose
inputs are unchanged is answered from it, and anything the build read that
changes sends the command back to the full build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from builder.root import memo
from builder.root.memo import NO_MEMO_ENV
from builder.root.replay import replay
from cli_helpers import write_context

DOCKERFILE = """\
FROM {base}
ARG FLAVOUR
COPY app/ /app/
COPY notes.txt /notes.txt
RUN cat /app/main.txt /notes.txt > /out.txt && echo "$FLAVOUR" >> /out.txt
"""
FILES = {"app/main.txt": "main\n", "app/lib/util.txt": "util\n", "notes.txt": "notes\n",
         "unrelated.txt": "not copied\n"}


@pytest.fixture
def built(cli, busybox_image, tmp_path, monkeypatch):
    """A context built once by the console script, and the same command's
    argv, run here in-process against the memo."""
    context = write_context(tmp_path / "ctx", DOCKERFILE.format(base=busybox_image.ref), FILES)
    time.sleep(0.3)  # settled: the build writes its memo
    args = ["--progress=plain", "-t", "memo-app", "--build-arg", "FLAVOUR", str(context)]
    env = {"FLAVOUR": "vanilla"}
    monkeypatch.chdir(tmp_path)  # the working directory is part of a memo's key
    done = cli.build(*args, env=env)
    assert done.returncode == 0, done.stderr.decode()
    monkeypatch.setattr(os, "environ", {**cli.env, **env})
    return {"cli": cli, "context": context, "argv": ["--root", str(cli.root), *args], "env": env,
            "first": done}


def replays(built, capsys) -> bool:
    capsys.readouterr()
    return replay(built["argv"]) == 0


def image_id(text: str) -> str:
    return re.search(r"writing image (sha256:[0-9a-f]{64}) done", text).group(1)


def slow_rebuild(built) -> subprocess.CompletedProcess:
    """The same build through the CLI module, which never reads a memo."""
    cli = built["cli"]
    return subprocess.run([sys.executable, "-m", "builder.cli", *built["argv"]], capture_output=True,
                          env={**cli.env, **built["env"]}, cwd=os.getcwd(), timeout=120)


def test_a_no_op_replays_what_the_full_cached_build_prints(built, capsys):
    assert replay(built["argv"]) == 0
    replayed = capsys.readouterr().err
    full = slow_rebuild(built)
    assert full.returncode == 0, full.stderr.decode()
    full_err = full.stderr.decode()
    # The same steps, numbered alike, all CACHED; the same image.
    assert re.findall(r"^#\d+ .*$", replayed, re.M) == re.findall(r"^#\d+ .*$", full_err, re.M)
    assert replayed.count(" CACHED") == full_err.count(" CACHED") >= 5
    assert image_id(replayed) == image_id(full_err) == image_id(built["first"].stderr.decode())
    assert "naming to docker.io/library/memo-app:latest done" in replayed


def test_the_console_script_replays_with_iidfile_and_quiet(cli, busybox_image, tmp_path):
    context = write_context(tmp_path / "ctx", DOCKERFILE.format(base=busybox_image.ref), FILES)
    iid = tmp_path / "iid"
    first = cli.build("-q", "--iidfile", str(iid), str(context))
    assert first.returncode == 0, first.stderr.decode()
    iid.unlink()
    again = cli.build("-q", "--iidfile", str(iid), str(context))
    assert again.returncode == 0 and again.stderr == b""
    assert again.stdout == first.stdout and iid.read_text() + "\n" == first.stdout.decode()


@pytest.mark.parametrize("change", ["content", "new file in a copied dir", "chmod", "dockerfile",
                                    "dockerignore", "symlinked dir", "env build arg"])
def test_what_the_build_read_changes_and_the_memo_is_not_used(built, capsys, change):
    context = built["context"]
    assert replays(built, capsys)
    if change == "content":
        path = context / "app/main.txt"
        st = path.stat()
        path.write_text("MAIN\n")  # same size, and the old mtime put back: ctime still tells
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "new file in a copied dir":
        (context / "app/lib/extra.txt").write_text("extra\n")
    elif change == "chmod":
        (context / "notes.txt").chmod(0o600)
    elif change == "dockerfile":
        path = context / "Dockerfile"
        path.write_text(path.read_text() + "LABEL x=y\n")
    elif change == "dockerignore":
        (context / ".dockerignore").write_text("app/lib\n")
    elif change == "symlinked dir":
        (context / "app").rename(context / "real-app")
        (context / "other").mkdir()
        (context / "other/main.txt").write_text("other\n")
        (context / "app").symlink_to("other")
    elif change == "env build arg":
        os.environ["FLAVOUR"] = "chocolate"
    assert not replays(built, capsys)


def test_unrelated_files_do_not_matter(built, capsys):
    (built["context"] / "unrelated.txt").write_text("changed, and never copied\n")
    assert replays(built, capsys)


def test_removing_the_image_or_its_cache_is_seen(built, capsys):
    cli = built["cli"]
    assert replays(built, capsys)
    assert cli.build("rmi", "memo-app").returncode == 0
    assert not replays(built, capsys)
    # The next full build writes the memo again.
    assert cli.build(*built["argv"][2:], env=built["env"]).returncode == 0
    assert replays(built, capsys)
    assert cli.build("prune", "--all").returncode == 0
    assert not (cli.root / "memo").exists() or not os.listdir(cli.root / "memo")
    assert not replays(built, capsys)


def test_a_changed_pybuild_is_not_trusted(built, capsys, monkeypatch):
    assert replays(built, capsys)
    monkeypatch.setattr(memo, "code_fingerprint", lambda: "another pybuild")
    assert not replays(built, capsys)


def test_builds_that_depend_on_more_than_stat_are_not_memoised(cli, busybox_image, tmp_path):
    context = write_context(tmp_path / "ctx", DOCKERFILE.format(base=busybox_image.ref), FILES)
    memos = cli.root / "memo"
    before = set(os.listdir(memos)) if memos.exists() else set()
    for extra in (["--no-cache"], ["-o", f"type=oci,dest={tmp_path / 'out.tar'}"],
                  ["--metadata-file", str(tmp_path / "meta.json")]):
        done = cli.build(*extra, str(context))
        assert done.returncode == 0, done.stderr.decode()
    assert (set(os.listdir(memos)) if memos.exists() else set()) == before


def test_a_build_that_adds_a_url_is_not_memoised(cli, busybox_image, tmp_path, http_dir):
    """BuildKit asks the server again on every build (the file may change)."""
    www, url = http_dir
    (www / "remote.txt").write_text("remote\n")
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\nADD {url}/remote.txt /remote.txt\n")
    memos = cli.root / "memo"
    before = set(os.listdir(memos)) if memos.exists() else set()
    for _ in range(2):
        done = cli.build("-t", "memo-url", str(context))
        assert done.returncode == 0, done.stderr.decode()
    assert (set(os.listdir(memos)) if memos.exists() else set()) == before


def _record(root, observer) -> list[str]:
    """memo.record of a build that read what `observer` holds; the memos
    written."""
    observer.target_key = "sha256:" + "0" * 64
    root.mkdir(exist_ok=True)
    memo.record(root, ["build", "."], observer, memo.Answer(
        progress="plain", quiet=True, iidfile=None, image_id="sha256:" + "1" * 64, manifest="sha256:" + "2" * 64,
        tags=(), warnings=[], config_path=None))
    return os.listdir(root / "memo") if (root / "memo").is_dir() else []


def test_a_file_rewritten_in_the_tick_the_build_read_it_is_not_vouched_for(tmp_path):
    """A file written just before the build read it can be written again,
    same size, within the same timestamp tick: nothing lstat shows changes.
    (The memo used to hash such a file after the build, and so vouched for
    the rewrite the build never saw.) No memo is written for such a build."""
    path = tmp_path / "f.txt"
    path.write_text("one\n")
    observer = memo.Observer()
    observer.look(path)  # the build reads "one"
    before = os.lstat(path)
    path.write_text("two\n")  # while it runs, same size, the mtime put back
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert observer.unchanged_since() is not None
    assert _record(tmp_path / "root", observer) == []


def test_a_settled_file_is_held_by_its_times(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("one\n")
    time.sleep(memo.RACY_NS / 1e9 * 2)
    observer = memo.Observer()
    observer.look(path)
    assert observer.unchanged_since() is None
    assert len(_record(tmp_path / "root", observer)) == 1
    entries = observer.entries()
    assert memo.unchanged(entries)
    before = os.lstat(path)
    path.write_text("two\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not memo.unchanged(entries)  # ctime moved: userland cannot put it back


def test_recording_never_raises(tmp_path):
    """What the build read vanishes before the memo is written; the memo's
    directory cannot be made: the build that succeeded still succeeds."""
    path = tmp_path / "f.txt"
    path.write_text("one\n")
    link = tmp_path / "link"
    link.symlink_to("f.txt")
    observer = memo.Observer()
    observer.look(path)
    observer.look_file(link)
    path.unlink()
    link.unlink()
    root = tmp_path / "root"
    root.mkdir()
    (root / "memo").write_text("a file where the directory goes")
    assert _record(root, observer) == []  # and nothing raised


def test_memos_do_not_pile_up(tmp_path):
    directory = tmp_path / "memo"
    directory.mkdir()
    for i in range(memo.MAX_MEMOS + 5):
        (directory / f"m{i}").write_text("{}")
        os.utime(directory / f"m{i}", ns=(i * 10**9, i * 10**9))
    memo._keep_newest(directory, memo.MAX_MEMOS)
    assert sorted(os.listdir(directory)) == sorted(f"m{i}" for i in range(5, memo.MAX_MEMOS + 5))


def test_a_symlink_inside_the_context_is_followed_as_the_build_follows_it(cli, busybox_image, tmp_path):
    """`data -> /dirs/current` resolves inside the context (as BuildKit
    resolves it), through `dirs/current -> v1`: repointing the second link
    changes what COPY reads, though neither `data` nor any file changed."""
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\nCOPY data/file.txt /file.txt\n",
                            {"dirs/v1/file.txt": "one\n", "dirs/v2/file.txt": "two\n"})
    (context / "dirs/current").symlink_to("v1")
    (context / "data").symlink_to("/dirs/current")
    time.sleep(0.3)  # settled: the first build writes its memo
    first = cli.build("-q", str(context))
    assert first.returncode == 0, first.stderr.decode()
    assert cli.build("-q", str(context)).stdout == first.stdout
    (context / "dirs/next").symlink_to("v2")
    os.rename(context / "dirs/next", context / "dirs/current")
    again = cli.build("-q", str(context))
    full = cli.build("-q", str(context), env={NO_MEMO_ENV: "1"})
    assert full.returncode == 0, full.stderr.decode()
    assert again.stdout == full.stdout != first.stdout
