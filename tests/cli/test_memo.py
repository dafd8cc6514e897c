"""The memo of a no-op rebuild (builder.memo): an identical command whose
inputs are unchanged is answered from it, and anything the build read that
changes sends the command back to the full build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from builder import memo
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
    return memo.replay(built["argv"])


def image_id(text: str) -> str:
    return re.search(r"writing image (sha256:[0-9a-f]{64}) done", text).group(1)


def slow_rebuild(built) -> subprocess.CompletedProcess:
    """The same build through the CLI module, which never reads a memo."""
    cli = built["cli"]
    return subprocess.run([sys.executable, "-m", "builder.cli", *built["argv"]], capture_output=True,
                          env={**cli.env, **built["env"]}, cwd=os.getcwd(), timeout=120)


def test_a_no_op_replays_what_the_full_cached_build_prints(built, capsys):
    assert memo.replay(built["argv"]) is True
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


def test_recent_times_are_backed_by_content(tmp_path):
    """A file written just before the build could be written again within
    the same clock tick: its memo entry holds its digest."""
    path = tmp_path / "f.txt"
    path.write_text("one\n")
    observer = memo.Observer()
    observer.look(path)
    (entry,) = observer.entries()
    assert entry[2] is not None  # too recent: content recorded
    assert memo._unchanged([entry])
    path.write_text("two\n")
    entry[1] = memo._stamp(os.lstat(path))  # as if the times had not moved
    assert not memo._unchanged([entry])

    old = tmp_path / "old.txt"
    old.write_text("old\n")
    past = time.time_ns() - 10_000_000_000
    os.utime(old, ns=(past, past))
    observer = memo.Observer()
    observer.started_ns = os.lstat(old).st_ctime_ns + 5_000_000_000
    observer.look(old)
    assert observer.entries()[0][2] is None  # old enough: stat alone decides


def test_memos_do_not_pile_up(tmp_path):
    directory = tmp_path / "memo"
    directory.mkdir()
    for i in range(memo.MAX_MEMOS + 5):
        (directory / f"m{i}").write_text("{}")
        os.utime(directory / f"m{i}", ns=(i * 10**9, i * 10**9))
    memo._keep_newest(directory, memo.MAX_MEMOS)
    assert sorted(os.listdir(directory)) == sorted(f"m{i}" for i in range(5, memo.MAX_MEMOS + 5))
