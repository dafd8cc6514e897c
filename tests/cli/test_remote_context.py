"""Contexts fetched by URL: a tar archive over HTTP and a git repository
(served by a real `git daemon` on loopback), removed after the build."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from builder.context.inputs import ContextKind, classify, split_git_url


@pytest.mark.parametrize("spec, kind", [
    (".", ContextKind.DIRECTORY),
    ("-", ContextKind.STDIN),
    ("https://github.com/org/repo.git", ContextKind.GIT),
    ("https://github.com/org/repo.git#v1:docker", ContextKind.GIT),
    ("git@github.com:org/repo.git", ContextKind.GIT),
    ("git://host/repo", ContextKind.GIT),
    ("github.com/org/repo", ContextKind.GIT),
    ("https://host/ctx.tar.gz", ContextKind.URL),
    ("http://host/Dockerfile", ContextKind.URL),
])
def test_classify_like_docker(spec, kind):
    assert classify(spec) is kind


def test_split_git_url():
    assert split_git_url("https://h/r.git#main:sub/dir") == ("https://h/r.git", "main", "sub/dir")
    assert split_git_url("https://h/r.git") == ("https://h/r.git", "", "")
    assert split_git_url("github.com/o/r#:d") == ("https://github.com/o/r", "", "d")


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_tarball_url_and_git_url_contexts(cli, busybox_image, tmp_path, http_dir, git_daemon):
    www, http_base = http_dir
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in {"Dockerfile": f"FROM {busybox_image.ref}\nCOPY msg /msg\n", "msg": "from-url\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text.encode()))
    (www / "ctx.tar.gz").write_bytes(buffer.getvalue())
    out = tmp_path / "out"
    done = cli.build("-q", "-o", f"type=local,dest={out / 'url'}", f"{http_base}/ctx.tar.gz")
    assert done.returncode == 0, done.stderr
    assert (out / "url" / "msg").read_text() == "from-url\n"

    missing = cli.build("-q", f"{http_base}/missing.tar.gz")
    assert missing.returncode == 1
    assert b"invalid response status 404" in missing.stderr

    base, git_base = git_daemon
    work = tmp_path / "work"
    (work / "docker").mkdir(parents=True)
    (work / "docker" / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY msg /msg\n")
    (work / "docker" / "msg").write_text("v1\n")
    _git("init", "-q", "-b", "main", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "v1", cwd=work)
    _git("tag", "v1", cwd=work)
    (work / "docker" / "msg").write_text("v2\n")
    _git("commit", "-q", "-am", "v2", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(base / "repo.git"), cwd=tmp_path)

    done = cli.build("-q", "-o", f"type=local,dest={out / 'git-main'}", f"{git_base}/repo.git#:docker")
    assert done.returncode == 0, done.stderr
    assert (out / "git-main" / "msg").read_text() == "v2\n"
    done = cli.build("-q", "-o", f"type=local,dest={out / 'git-tag'}", f"{git_base}/repo.git#v1:docker")
    assert done.returncode == 0, done.stderr
    assert (out / "git-tag" / "msg").read_text() == "v1\n"

    bad = cli.build("-q", f"{git_base}/repo.git#no-such-ref")
    assert bad.returncode == 1
    assert b"failed to fetch git context" in bad.stderr and b"Traceback" not in bad.stderr
    assert list((cli.root / "tmp").iterdir()) == []
