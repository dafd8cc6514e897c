"""Issue 16: what an ordinary user's pybuild fetches and unpacks — a git
repository (ADD and as the context), an http URL, a local tar archive whose
members have owners — lands as in a root build: the owners of the tar's
members, or the --chown asked."""

from __future__ import annotations

import functools
import http.server
import io
import subprocess
import tarfile
import threading

import pytest

from rootless_helpers import Archive


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def served(tmp_path):
    """Files served over http by root, on loopback: yields (dir, base URL)."""
    directory = tmp_path / "served"
    directory.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _owned_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, uid, gid in (("by-1000", 1000, 1000), ("by-nobody", 65534, 65534), ("by-root", 0, 0)):
            data = name.encode()
            info = tarfile.TarInfo(f"owned/{name}")
            info.size, info.uid, info.gid, info.mode = len(data), uid, gid, 0o640
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_git_http_and_tar_sources(rootless, busybox_image, git_daemon, served):
    base, git_url = git_daemon
    repo = base / "repo.git"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    (repo / "from-git.txt").write_text("from git\n")
    (repo / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY from-git.txt /context-was-git\n")
    _git("add", ".", cwd=repo)
    _git("commit", "-q", "-m", "one", cwd=repo)
    directory, http_url = served
    (directory / "page.txt").write_text("over http\n")

    context = rootless.write_context("ctx", f"""\
FROM {busybox_image.ref}
ADD {git_url}/repo.git#main /git/
ADD --chown=1000:1000 {http_url}/page.txt /http/page.txt
ADD owned.tar /unpacked/
""", {"owned.tar": _owned_tar()})
    out = rootless.mkdir("out")
    rootless.ok("build", "-o", f"type=oci,dest={out / 'image'},tar=false", str(context))
    image = Archive(out / "image")
    assert image.layer_entry("git/from-git.txt", index=-3).uid == 0
    page = image.layer_entry("http/page.txt", index=-2)
    assert (page.uid, page.gid) == (1000, 1000)
    for name, owner in (("by-1000", 1000), ("by-nobody", 65534), ("by-root", 0)):
        entry = image.layer_entry(f"unpacked/owned/{name}", index=-1)
        assert (entry.uid, entry.gid, entry.mode) == (owner, owner, 0o640), name

    # The repository as the build context.
    rootless.ok("build", "-o", f"type=local,dest={rootless.home / 'rootfs'}", f"{git_url}/repo.git#main")
    assert (rootless.home / "rootfs" / "context-was-git").read_text() == "from git\n"
