"""`kill -9` of pybuild while it fetches: a git context, `ADD <git url>`,
a registry's credentials from a credential helper; and a no-op memo
replayed after a killed build. The servers stall on loopback, so the kill
lands while git (and git-remote-http) or the helper (and its child) wait.
Within a second nothing the build started is alive, and after the next
command no fetched context, git HOME, mount or lease of the dead build is
left and `pybuild doctor` is clean without --fix. The helpers, and the
marker in the environment that finds the build's processes, are
test_kill's.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from fixtures.servers import LoopbackServer
from runtime.lifeline import Supervised
from reliability.test_kill import (ROOT, RUNNING_STEP, Build, _assert_nothing_survives, _assert_reclaimed, _context,
                                   _env, _left_on_tmpfs, _marked, _mounts_under, _next_command, _started,
                                   _wait_until)


class StallingServer:
    """Accepts connections on loopback, reads nothing and never answers."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="stalling-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()
        self._socket.close()


@pytest.fixture
def stalling_server():
    server = StallingServer()
    yield server
    server.close()


def _waiting_git(server: StallingServer, mark: str):
    """git's remote helper of this build has sent its request and waits."""
    return lambda: server.connections and any("remote-http" in line for line in _marked(mark).values())


def _contexts(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(name for name in os.listdir(tmp) if name.startswith("context-")) if tmp.is_dir() else []


def _git_homes_in_tmp() -> set[str]:
    """Where git's HOME was made before it moved to /dev/shm."""
    return {name for name in os.listdir("/tmp") if name.startswith("pybuild-git")}


def _git_home(mark: str) -> Path:
    """The HOME of the build's git fetch, from the git process itself."""
    for pid, line in _marked(mark).items():
        if line.startswith(("git ", "/usr/bin/git ")) and " fetch " in f"{line} ":
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            return Path(next(v for v in environ if v.startswith(b"HOME=")).decode()[5:])
    raise AssertionError(f"no git fetch among {_marked(mark)}")


def test_kill_during_a_git_context_fetch(tmp_path, stalling_server):
    root = tmp_path / "root"
    mark = uuid.uuid4().hex
    homes_before = _git_homes_in_tmp()
    build = Build(tmp_path, root, f"{stalling_server.url}/{mark}/repo.git#main", "builtin", mark=mark)
    _wait_until(_waiting_git(stalling_server, mark), what="git to fetch")
    home = _git_home(mark)
    info, inside = home.lstat(), os.listdir(home)
    died = build.kill()
    _assert_nothing_survives(build, died)
    # git's HOME, where it reads .gitconfig and .netrc: pybuild's own, made
    # by mkdtemp (a name nobody could have made first), private, and named
    # with the build's token for the next command to take back (any
    # pybuild command may have done so already: /dev/shm is shared)
    assert home.parent == Path("/dev/shm") and re.fullmatch(rf"pybuild-git-{build.pid}_[0-9a-f]{{8}}-\w+", home.name)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    assert inside == []
    assert _contexts(root), "the fetched context stays until the next command"
    _next_command(root, "du")
    _assert_reclaimed(root, build)
    assert _contexts(root) == []
    assert _git_homes_in_tmp() <= homes_before


def test_kill_during_add_of_a_git_url(tmp_path, busybox_image, stalling_server):
    """ADD resolves the ref with `git ls-remote`, which waits: pybuild is
    killed in the middle of the build, its base pulled."""
    root = tmp_path / "root"
    mark = uuid.uuid4().hex
    homes_before = _git_homes_in_tmp()
    context = _context(tmp_path, f"FROM {busybox_image.ref}\nADD {stalling_server.url}/{mark}/repo.git#main /src\n")
    build = Build(tmp_path, root, context, "builtin", mark=mark)
    _wait_until(_waiting_git(stalling_server, mark), what="git to fetch")
    scratch = _left_on_tmpfs(build.pid)
    died = build.kill()
    _assert_nothing_survives(build, died)
    assert any(name.startswith("pybuild-git-") for name in scratch), "git's HOME is the build's scratch"
    _next_command(root, "build", "--isolation", "builtin",
                  str(_context(tmp_path, f"FROM {busybox_image.ref}\nRUN echo quick\n")))
    _assert_reclaimed(root, build)
    assert _git_homes_in_tmp() <= homes_before


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    """A registry asking for Basic credentials, for any request."""

    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="registry"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_kill_while_a_credential_helper_runs(tmp_path, monkeypatch):
    """docker's config names a credential helper for the registry, and the
    helper (a shell waiting on a child, as `pass` waits on gpg) never
    answers: it dies with pybuild, its child too."""
    with LoopbackServer(_Unauthorized) as server:
        registry = server.host
        helpers = tmp_path / "bin"
        helpers.mkdir()
        helper = helpers / "docker-credential-stall"
        helper.write_text("#!/bin/sh\nsleep 1003\necho '{}'\n")
        helper.chmod(0o755)
        config = tmp_path / "docker-config"
        config.mkdir()
        (config / "config.json").write_text(json.dumps({"credHelpers": {registry: "stall"}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        monkeypatch.setenv("PATH", f"{helpers}{os.pathsep}{os.environ['PATH']}")
        root = tmp_path / "root"
        mark = uuid.uuid4().hex
        build = Build(tmp_path, root, _context(tmp_path, f"FROM {registry}/private:latest\n"), "builtin", mark=mark)
        _wait_until(lambda: any("sleep 1003" in line for line in _marked(mark).values()), what="the helper")
        died = build.kill()
        _assert_nothing_survives(build, died)
        _next_command(root, "du")
        _assert_reclaimed(root, build)


@pytest.mark.parametrize("how", ["stopped", "exited"])
def test_what_a_supervised_command_started_dies_with_it(how):
    """The supervisor kills the command's process group, not only the
    command: when it is stopped (as when pybuild dies), and when the
    command exits and leaves a child behind."""
    script = "sleep 1004 & echo $!; " + ("wait" if how == "stopped" else "exit 0")
    process = Supervised(["/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True)
    with process:
        child = int(process.stdout.readline())
        if how == "stopped":
            process.stop()
        process.wait(timeout=10)
    deadline = time.monotonic() + 1.0
    while _running(child):
        assert time.monotonic() < deadline, f"the command's child {child} outlives it"
        time.sleep(0.01)


def _running(pid: int) -> bool:
    try:
        return "sleep" in Path(f"/proc/{pid}/cmdline").read_text()  # a zombie's is empty
    except FileNotFoundError:
        return False


def test_a_memo_replay_after_a_killed_build_reclaims_first(tmp_path, busybox_image):
    """A no-op memo'd command does not open the root, which is where a
    killed build's leftovers are taken back: after a kill on the same root
    the identical command runs the full build instead, which reclaims."""
    root = tmp_path / "root"
    memoised = _context(tmp_path, f"FROM {busybox_image.ref}\nCOPY Dockerfile /Dockerfile\n")
    time.sleep(0.3)  # settled: the build writes its memo (builder.root.memo.RACY_NS)
    env = {key: value for key, value in os.environ.items() if key != "PYBUILD_NO_MEMO"}

    def console_script() -> None:
        """The command as the `pybuild` console script runs it: memo first."""
        done = subprocess.run([sys.executable, "-c", "from builder.entry import main; main()", "--root", str(root),
                               "--progress", "plain", "--isolation", "builtin", str(memoised)],
                              capture_output=True, timeout=120, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr.decode()

    def memo_inode() -> int:
        [memo] = (root / "memo").iterdir()
        return memo.stat().st_ino

    console_script()
    written = memo_inode()
    console_script()
    assert memo_inode() == written, "replayed from the memo (a full build writes it anew)"
    mark = uuid.uuid4().hex
    killed = Build(tmp_path, root, _context(tmp_path, f"FROM {busybox_image.ref}\n{_env(mark)}{RUNNING_STEP}"),
                   "builtin", mark=mark)
    _wait_until(_started(root, mark), what="the step")
    died = killed.kill()
    _assert_nothing_survives(killed, died)
    assert _mounts_under(root) and _left_on_tmpfs(killed.pid), "the killed build's overlay and scratch stay"
    console_script()
    _assert_reclaimed(root, killed)
    assert memo_inode() != written, "the full build ran"
