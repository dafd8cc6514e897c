"""The Dockerfile and ignore files a build reads from its context.

A context (a checkout, a fetched repository, an archive) may hold symlinks
named `Dockerfile` or `.dockerignore` pointing anywhere on the host. They
are read as BuildKit reads them: resolved inside the directory they were
found in, as if it were `/`, only when regular files, and at most 16 MiB.
Each test aims such a file at a victim file of its own, outside the
context, holding a secret, and checks that the secret appears in no output
and that the build fails or proceeds exactly as if the link were absent.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _pybuild(*args, env=None, input=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT, input=input)


def _build(root: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    return _pybuild("build", "--root", str(root), "--progress", "plain", *args, **kwargs)


def _output(done: subprocess.CompletedProcess) -> str:
    return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


@pytest.fixture
def victim(tmp_path) -> tuple[Path, str]:
    """A host file outside every context; its one line is an instruction
    pybuild does not know and a bad ignore pattern, so any read of it shows
    in an error excerpt."""
    secret = f"SECRET_{secrets.token_hex(12)}"
    path = tmp_path / "host" / "victim.txt"
    path.parent.mkdir()
    path.write_text(f"{secret}=[x\n")
    return path, secret


def _context(tmp_path: Path, name: str = "ctx") -> Path:
    context = tmp_path / name
    context.mkdir()
    return context


# -- the Dockerfile ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_a_dockerfile_symlink_out_of_the_context_reads_nothing_outside(tmp_path, victim, target):
    path, secret = victim
    context = _context(tmp_path)
    link = str(path) if target == "absolute" else os.path.relpath(path, context)
    (context / "Dockerfile").symlink_to(link)
    done = _build(tmp_path / "root", str(context))
    assert done.returncode == 1
    # resolved inside the context, where there is no such file (BuildKit: not found)
    assert "failed to read dockerfile" in done.stderr.decode()
    assert "no such file or directory" in done.stderr.decode()
    assert secret not in _output(done)
    assert "Traceback" not in _output(done)


def test_a_dockerfile_symlink_to_proc_environ_shows_no_variable(tmp_path):
    token = f"TOKEN_{secrets.token_hex(12)}"
    context = _context(tmp_path)
    (context / "Dockerfile").symlink_to("/proc/self/environ")
    done = _build(tmp_path / "root", str(context), env={"CI_TOKEN": token})
    assert done.returncode == 1
    assert token not in _output(done)


def test_a_dockerfile_symlink_to_dev_zero_ends_at_once(tmp_path):
    context = _context(tmp_path)
    (context / "Dockerfile").symlink_to("/dev/zero")
    started = time.monotonic()
    done = _build(tmp_path / "root", str(context), timeout=60)
    assert done.returncode == 1
    assert "no such file or directory" in done.stderr.decode()
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_dockerfile_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    context = _context(tmp_path)
    dockerfile = context / "Dockerfile"
    if kind == "fifo":
        os.mkfifo(dockerfile)  # an open for reading would wait for a writer forever
    elif kind == "directory":
        dockerfile.mkdir()
    else:
        os.mknod(dockerfile, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero's numbers
    done = _build(tmp_path / "root", str(context), timeout=60)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1] == \
        "ERROR: failed to read dockerfile: Dockerfile is not a regular file"


def test_a_dockerfile_larger_than_buildkit_reads_is_refused(tmp_path):
    context = _context(tmp_path)
    with open(context / "Dockerfile", "wb") as handle:
        handle.write(b"# " + b"x" * (16 << 20))
    done = _build(tmp_path / "root", str(context))
    assert done.returncode == 1
    assert "Dockerfile exceeds maximum allowed size of 16777216 bytes" in done.stderr.decode()


def test_an_endless_dockerfile_on_stdin_is_refused(tmp_path):
    context = _context(tmp_path)
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run([sys.executable, "-m", "builder.cli", "build", "--root", str(tmp_path / "root"),
                               "-f", "-", str(context)], stdin=zero, capture_output=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert "exceeds maximum allowed size of 16777216 bytes" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_a_dockerfile_symlink_inside_the_context_is_followed(tmp_path, busybox_image):
    context = _context(tmp_path)
    (context / "docker").mkdir()
    (context / "docker" / "build.dockerfile").write_text(f"FROM {busybox_image.ref}\nLABEL via=link\n")
    (context / "Dockerfile").symlink_to("docker/build.dockerfile")
    (context / "abs").symlink_to("/docker/build.dockerfile")  # absolute: from the context's top
    for extra in ((), ("-f", str(context / "abs"))):
        done = _build(tmp_path / "root", *extra, str(context))
        assert done.returncode == 0, done.stderr.decode()


def test_dash_f_is_read_as_typed_but_its_symlink_stays_in_its_directory(tmp_path, busybox_image, victim):
    path, secret = victim
    context = _context(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "app.dockerfile").write_text(f"FROM {busybox_image.ref}\n")
    # a path typed on the command line is the user's choice, even outside the context
    done = _build(tmp_path / "root", "-f", str(elsewhere / "app.dockerfile"), str(context))
    assert done.returncode == 0, done.stderr.decode()
    # ... but a symlink at that path is resolved inside its directory, as buildx
    # sends the directory of -f and BuildKit reads the name inside it
    (context / "Dockerfile.ci").symlink_to(path)
    done = _build(tmp_path / "root", "-f", str(context / "Dockerfile.ci"), str(context))
    assert done.returncode == 1
    assert "no such file or directory" in done.stderr.decode()
    assert secret not in _output(done)


# -- ignore files ---------------------------------------------------------------------


def _copy_all(tmp_path: Path, busybox_image, context: Path, *extra: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    return _build(tmp_path / "root", "-o", f"type=local,dest={out}", *extra, str(context))


@pytest.mark.parametrize("name", [".dockerignore", "Dockerfile.dockerignore"])
def test_an_ignore_file_symlink_out_of_the_context_is_not_read(tmp_path, busybox_image, victim, name):
    path, secret = victim
    context = _context(tmp_path)
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY . /ctx/\n")
    (context / "kept.txt").write_text("kept\n")
    (context / name).symlink_to(path)
    done = _copy_all(tmp_path, busybox_image, context)
    # Read, the victim's `[x` would fail the build with its line in the message.
    assert done.returncode == 0, done.stderr.decode()
    assert secret not in _output(done)
    assert (tmp_path / "out" / "ctx" / "kept.txt").read_text() == "kept\n"


def test_an_ignore_file_symlink_inside_the_context_is_followed(tmp_path, busybox_image):
    context = _context(tmp_path)
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY . /ctx/\n")
    (context / "ignore.txt").write_text("secret.txt\n")
    (context / "secret.txt").write_text("s\n")
    (context / ".dockerignore").symlink_to("/ignore.txt")
    done = _copy_all(tmp_path, busybox_image, context)
    assert done.returncode == 0, done.stderr.decode()
    assert not (tmp_path / "out" / "ctx" / "secret.txt").exists()
    assert (tmp_path / "out" / "ctx" / "ignore.txt").exists()


def test_an_ignore_file_fifo_is_refused_without_waiting(tmp_path, busybox_image):
    context = _context(tmp_path)
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\n")
    os.mkfifo(context / ".dockerignore")
    done = _build(tmp_path / "root", str(context), timeout=60)
    assert done.returncode == 1
    assert "failed to read dockerignore: .dockerignore is not a regular file" in done.stderr.decode()


def test_a_named_contexts_ignore_file_symlink_out_is_not_read(tmp_path, busybox_image, victim):
    path, secret = victim
    context = _context(tmp_path)
    named = _context(tmp_path, "named")
    (named / "data.txt").write_text("data\n")
    (named / ".dockerignore").symlink_to(path)
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY --from=src data.txt /data.txt\n")
    done = _copy_all(tmp_path, busybox_image, context, "--build-context", f"src={named}")
    assert done.returncode == 0, done.stderr.decode()
    assert secret not in _output(done)
    assert (tmp_path / "out" / "data.txt").read_text() == "data\n"


def test_pybuild_check_reads_the_same_way(tmp_path, victim):
    path, secret = victim
    context = _context(tmp_path)
    (context / "Dockerfile").symlink_to(path)
    done = _pybuild("check", str(context))
    assert done.returncode == 1
    assert secret not in _output(done)
    (context / "Dockerfile").unlink()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (context / ".dockerignore").symlink_to(path)
    done = _pybuild("check", str(context))
    assert done.returncode == 0, _output(done)
    assert secret not in _output(done)


# -- fetched contexts -------------------------------------------------------------------


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def test_a_git_contexts_dockerfile_symlink_reads_nothing_outside(tmp_path, git_daemon, victim):
    path, secret = victim
    base, url = git_daemon
    repo = base / "repo.git"
    work = tmp_path / "work"
    work.mkdir()
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "Dockerfile").symlink_to(path)
    (work / "sub").symlink_to(path.parent)  # a directory link for `-f sub/victim.txt`
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "links", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(repo), cwd=tmp_path)
    for extra in ((), ("-f", f"sub/{path.name}")):
        done = _build(tmp_path / "root", *extra, f"{url}/repo.git")
        assert done.returncode == 1
        assert "no such file or directory" in done.stderr.decode()
        assert secret not in _output(done)


def test_a_git_contexts_subdirectory_symlinks_resolve_in_the_repository(tmp_path, git_daemon, busybox_image,
                                                                        victim):
    path, secret = victim
    (path.parent / "Dockerfile").write_text("FROM scratch\n")  # what a host-side lookup would find
    base, url = git_daemon
    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nLABEL from=docs\n")
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "inrepo").symlink_to("/docs")  # absolute: the repository's own /docs
    (work / "host").symlink_to(path.parent)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "links", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(base / "repo.git"), cwd=tmp_path)
    done = _build(tmp_path / "root", f"{url}/repo.git#main:inrepo")
    assert done.returncode == 0, done.stderr.decode()
    done = _build(tmp_path / "root", f"{url}/repo.git#main:host")
    assert done.returncode == 1
    assert "subdirectory 'host' not found" in done.stderr.decode()
    assert secret not in _output(done)


def test_a_stdin_archive_whose_dockerfile_links_out_is_refused(tmp_path, victim):
    path, secret = victim
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.type, info.linkname = tarfile.SYMTYPE, str(path)
        archive.addfile(info)
    done = _build(tmp_path / "root", "-", input=buffer.getvalue())
    assert done.returncode == 1
    assert secret not in _output(done)
    assert "Traceback" not in _output(done)
