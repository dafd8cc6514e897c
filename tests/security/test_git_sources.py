"""Git contexts and `ADD <git url>` against hostile repositories and refs.

Repositories are made in the test and served by a real `git daemon` on
loopback. The attacks: a `.gitmodules` whose submodule URL is a local
`file://` repository of the host (its secret must not reach the image) or
an `ext::` command (its victim file must not appear), with the transports
allowed in the user's git config, as many CI images allow `file`; and a
ref shaped like an option (`#--upload-pack=...`), which git would run
through the ssh transport. Every git command pybuild runs is recorded by a
wrapper on PATH that hands it to the real git.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_GIT = shutil.which("git")
CONFINED = ["-c", "protocol.file.allow=never", "-c", "protocol.ext.allow=never"]


def _pybuild(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], capture_output=True, timeout=180,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def _git(*args, cwd) -> str:
    return subprocess.run([REAL_GIT, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
                           *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def _repo(work: Path, files: dict[str, str]) -> Path:
    work.mkdir(parents=True)
    _git("init", "-q", cwd=work)
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "files", cwd=work)
    return work


def _with_submodule(work: Path, url: str, commit: str) -> None:
    """A submodule `sub` at `commit` fetched from `url`, written by hand so
    that nothing fetches it while the repository is made."""
    (work / ".gitmodules").write_text(f'[submodule "sub"]\n\tpath = sub\n\turl = {url}\n')
    _git("add", ".gitmodules", cwd=work)
    _git("update-index", "--add", "--cacheinfo", f"160000,{commit},sub", cwd=work)
    _git("commit", "-q", "-m", "submodule", cwd=work)


def _publish(work: Path, base: Path, name: str) -> None:
    _git("clone", "-q", "--bare", str(work), str(base / name), cwd=work.parent)


@pytest.fixture
def permissive_git_config(tmp_path) -> dict:
    """A user's git config allowing the file and ext transports everywhere."""
    config = tmp_path / "gitconfig"
    config.write_text("[protocol \"file\"]\n\tallow = always\n[protocol \"ext\"]\n\tallow = always\n")
    return {"GIT_CONFIG_GLOBAL": str(config), "GIT_PROTOCOL_FROM_USER": "1"}


def _dockerfile(busybox_image) -> dict[str, str]:
    return {"Dockerfile": f"FROM {busybox_image.ref}\nCOPY . /src/\n", "top.txt": "top\n"}


def test_a_file_url_submodule_copies_nothing_of_the_host(tmp_path, git_daemon, busybox_image,
                                                          permissive_git_config):
    base, url = git_daemon
    secret = f"host-secret-{secrets.token_hex(12)}"
    private = _repo(tmp_path / "private", {"secret.txt": secret + "\n"})
    main = _repo(tmp_path / "main", _dockerfile(busybox_image))
    _with_submodule(main, f"file://{private}", _git("rev-parse", "HEAD", cwd=private))
    _publish(main, base, "main.git")
    done = _pybuild("build", "--root", str(tmp_path / "root"), "-o", f"type=local,dest={tmp_path / 'out'}",
                    f"{url}/main.git", env=permissive_git_config)
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert "transport 'file' not allowed" in stderr, stderr
    assert "Traceback" not in stderr
    holding = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(private)
               and secret.encode() in p.read_bytes()]
    assert holding == []


def test_an_ext_submodule_runs_nothing(tmp_path, git_daemon, busybox_image, permissive_git_config):
    base, url = git_daemon
    victim = tmp_path / "victim"
    main = _repo(tmp_path / "main", _dockerfile(busybox_image))
    _with_submodule(main, f"ext::sh -c touch% {victim}", _git("rev-parse", "HEAD", cwd=main))
    _publish(main, base, "main.git")
    for dockerfile_add in (False, True):
        if dockerfile_add:
            context = tmp_path / "ctx"
            context.mkdir()
            (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nADD {url}/main.git /src/\n")
            source = str(context)
        else:
            source = f"{url}/main.git"
        done = _pybuild("build", "--root", str(tmp_path / "root"), source, env=permissive_git_config)
        assert not victim.exists(), "the ext:: submodule ran its command"
        assert done.returncode == 1
        assert "transport 'ext' not allowed" in done.stderr.decode(), done.stderr.decode()


def test_a_ref_shaped_like_an_option_is_refused(tmp_path, busybox_image):
    victim = tmp_path / "victim"
    # Stands for sshd on the far side of ssh://: it runs the command git asks
    # for, as a shell on the repository's host would.
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text('#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n')
    fake_ssh.chmod(0o755)
    env = {"GIT_SSH_COMMAND": str(fake_ssh), "GIT_SSH_VARIANT": "simple"}
    ref = f"--upload-pack=touch {victim};true"
    remote = f"ssh://127.0.0.1{tmp_path}/repo.git"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nADD {remote}#--upload-pack=touch /src/\n")
    for source in (f"{remote}#{ref}", str(context)):
        done = _pybuild("build", "--root", str(tmp_path / "root"), source, env=env)
        assert not victim.exists(), "git took the ref for --upload-pack"
        assert done.returncode == 1
        assert "invalid ref '--upload-pack=" in done.stderr.decode(), done.stderr.decode()


def test_every_git_command_is_confined_and_takes_user_strings_as_operands(tmp_path, git_daemon, busybox_image):
    base, url = git_daemon
    log = tmp_path / "git.log"
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    (wrapper_dir / "git").write_text(f'#!/bin/sh\nfor arg; do printf "%s\\n" "$arg"; done >> {log}\n'
                                     f'echo ---- >> {log}\nexec {REAL_GIT} "$@"\n')
    (wrapper_dir / "git").chmod(0o755)
    sub = _repo(tmp_path / "sub", {"inner.txt": "inner\n"})
    _publish(sub, base, "sub.git")
    main = _repo(tmp_path / "main", _dockerfile(busybox_image))
    # relative to the superproject's git:// URL: a legitimate submodule
    _with_submodule(main, "../sub.git", _git("rev-parse", "HEAD", cwd=sub))
    _publish(main, base, "main.git")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nADD {url}/main.git#main /src/\n")
    out = tmp_path / "out"
    env = {"PATH": f"{wrapper_dir}{os.pathsep}{os.environ['PATH']}"}
    for name, source in (("context", f"{url}/main.git#main"), ("add", str(context))):
        done = _pybuild("build", "--root", str(tmp_path / "root"), "-o", f"type=local,dest={out / name}", source,
                        env=env)
        assert done.returncode == 0, done.stderr.decode()
        assert (out / name / "src" / "sub" / "inner.txt").read_text() == "inner\n"
    calls = [call.strip("\n").split("\n") for call in log.read_text().split("----\n") if call.strip()]
    assert len(calls) >= 8
    for argv in calls:
        assert argv[:4] == CONFINED, argv
        for user_string in (f"{url}/main.git", "main"):
            if user_string in argv[4:] and argv[4] in ("ls-remote", "remote", "fetch"):
                assert "--" in argv and argv.index("--") < argv.index(user_string), argv
