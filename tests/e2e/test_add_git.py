"""ADD <git url>: one ref of a repository, keyed by the commit it names."""

import subprocess

from e2e.helpers import build_image


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=cwd, check=True,
                   capture_output=True)


def _repo(base, name: str, files: dict[str, str]):
    """A one-commit repository on branch main, served by the git daemon."""
    repo = base / name
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    _git("add", ".", cwd=repo)
    _git("commit", "-q", "-m", "one", cwd=repo)
    return repo


def test_add_git_follows_the_branch(tmp_path, root, busybox_image, git_daemon):
    base, url = git_daemon
    repo = _repo(base, "repo.git", {"file.txt": "one\n"})
    dockerfile = f"FROM {busybox_image.ref}\nADD {url}/repo.git#main /src/\nRUN cat /src/file.txt\n"
    first = build_image(tmp_path / "a", root, dockerfile)
    assert first.read_text("/src/file.txt") == "one\n"
    assert not first.exists("/src/.git")
    again = build_image(tmp_path / "b", root, dockerfile)
    assert again.result.executed_steps == 0
    (repo / "file.txt").write_text("two\n")
    _git("commit", "-q", "-am", "two", cwd=repo)
    moved = build_image(tmp_path / "c", root, dockerfile)
    assert moved.read_text("/src/file.txt") == "two\n"


def test_add_git_subdirectory(tmp_path, root, busybox_image, git_daemon):
    base, url = git_daemon
    _repo(base, "sub.git", {"top.txt": "top\n", "docs/index.txt": "index\n", "docs/guide/a.txt": "a\n"})
    dockerfile = f"FROM {busybox_image.ref}\nADD {url}/sub.git#main:docs /d/\n"
    image = build_image(tmp_path / "a", root, dockerfile)
    assert image.read_text("/d/index.txt") == "index\n"
    assert image.read_text("/d/guide/a.txt") == "a\n"
    assert not image.exists("/d/top.txt") and not image.exists("/d/docs")
