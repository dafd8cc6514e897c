"""The host user's credentials never reach a server a build names.

A Dockerfile (or a remote context) names the URLs pybuild fetches, so
whatever credentials the host keeps for a server must stay home: BuildKit
fetches from its daemon, which has none of the user's.

- `ADD <url>`: requests would read `~/.netrc` (or `$NETRC`) for the URL's
  host and, on a redirect, for the new host. A loopback server serves its
  file only with the Basic credentials a netrc file holds; the build fails
  with its 401 and the server never sees them, also when a URL on another
  address redirects there. Proxies from the environment still work.
- The registry client: a netrc entry for the registry's host is never sent,
  nor replaces the credentials of the docker config.
- Git sources: libcurl reads `~/.netrc` and git the credential helper of
  `~/.gitconfig`. A real `git http-backend` behind Basic auth serves the
  repository only with them; plain git on this host clones it with that
  HOME, pybuild's git context and `ADD <git url>` fail and the server never
  sees them.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.registry.auth import Credentials, no_credentials
from builder.errors import RegistryError
from builder.registry.reference import Reference
from builder.registry.client import RegistryClient
from fixtures.proxy import FaultProxy
from fixtures.pybuild import pybuild_env
from fixtures.servers import RecordingServer, send

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ci", "hunter2-host-secret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PRIVATE = b"private-artifact-bytes\n"


def _saw_credentials(server: RecordingServer) -> bool:
    return any(auth == BASIC for _, _, auth in server.requests)


def _protected(handler) -> None:
    if handler.headers.get("Authorization") != BASIC:
        send(handler, 401, headers={"WWW-Authenticate": 'Basic realm="private"'})
    else:
        send(handler, 200, PRIVATE)


@pytest.fixture
def protected():
    server = RecordingServer(_protected)
    yield server
    server.close()


def _netrc(path: Path, host: str = "127.0.0.1", password: str = PASSWORD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"machine {host} login {USER} password {password}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(params=["home", "NETRC"])
def netrc_env(request, tmp_path) -> dict:
    """The host user's netrc with the credentials, in $HOME/.netrc or named by $NETRC."""
    home = tmp_path / "home"
    home.mkdir()
    if request.param == "home":
        _netrc(home / ".netrc")
        return {"HOME": str(home)}
    return {"HOME": str(home), "NETRC": str(_netrc(tmp_path / "elsewhere" / "netrc"))}


def _pybuild(tmp_path: Path, dockerfile: str | None, *args: str, env: dict) -> subprocess.CompletedProcess:
    context = tmp_path / f"ctx-{len(list(tmp_path.glob('ctx-*')))}"
    context.mkdir()
    if dockerfile is not None:
        (context / "Dockerfile").write_text(dockerfile)
        args = (*args, str(context))
    return subprocess.run([sys.executable, "-m", "builder.cli", "build", "--root", str(tmp_path / "root"),
                           "--progress", "plain", *args], capture_output=True, text=True, timeout=180,
                          cwd=ROOT, env=pybuild_env(tmp_path, **env))


# -- ADD <url> ---------------------------------------------------------------------


def test_add_url_sends_no_netrc_credentials(tmp_path, busybox_image, protected, netrc_env):
    done = _pybuild(tmp_path, f"FROM {busybox_image.ref}\nADD {protected.url}/artifact /a\n", env=netrc_env)
    assert done.returncode == 1, done.stderr
    assert f"failed to fetch {protected.url}/artifact: invalid response status 401" in done.stderr
    assert "Traceback" not in done.stderr
    assert protected.requests and not _saw_credentials(protected)


def test_a_redirect_to_a_netrc_host_gets_no_credentials(tmp_path, busybox_image, protected, netrc_env):
    # The Dockerfile names a server the netrc knows nothing of (another
    # loopback address); it redirects to the one it knows.
    attacker = RecordingServer(lambda h: send(h, 302, headers={"Location": f"{protected.url}/artifact"}),
                      address="127.0.0.2")
    try:
        done = _pybuild(tmp_path, f"FROM {busybox_image.ref}\nADD {attacker.url}/x /a\n", env=netrc_env)
    finally:
        attacker.close()
    assert done.returncode == 1, done.stderr
    assert "invalid response status 401" in done.stderr
    assert attacker.requests and protected.requests
    assert not _saw_credentials(protected) and not _saw_credentials(attacker)


def test_add_url_keeps_the_credentials_of_its_own_url(tmp_path, busybox_image, protected, netrc_env):
    url = protected.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    out = tmp_path / "out"
    done = _pybuild(tmp_path, f"FROM {busybox_image.ref}\nADD {url}/artifact /a\n", "-o", f"type=local,dest={out}",
                    env={"HOME": netrc_env["HOME"]})
    assert done.returncode == 0, done.stderr
    assert (out / "a").read_bytes() == PRIVATE


def test_add_url_goes_through_the_environments_proxy_except_for_no_proxy(tmp_path, busybox_image):
    # A forward proxy answers for a host that does not exist; NO_PROXY sends
    # the registry and the direct server past it.
    proxy = RecordingServer(lambda h: send(h, 200, b"via-proxy\n"))
    direct = RecordingServer(lambda h: send(h, 200, b"direct\n"), address="127.0.0.2")
    out = tmp_path / "out"
    try:
        done = _pybuild(tmp_path, f"FROM {busybox_image.ref}\nADD http://pybuild-proxied.invalid/p /p\n"
                        f"ADD {direct.url}/d /d\n", "-o", f"type=local,dest={out}",
                        env={"HOME": str(tmp_path), "HTTP_PROXY": proxy.url, "http_proxy": proxy.url,
                             "NO_PROXY": "127.0.0.1,127.0.0.2", "no_proxy": "127.0.0.1,127.0.0.2"})
    finally:
        proxy.close()
        direct.close()
    assert done.returncode == 0, done.stderr
    assert (out / "p").read_bytes() == b"via-proxy\n"
    assert (out / "d").read_bytes() == b"direct\n"
    assert [path for _, path, _ in proxy.requests] == ["http://pybuild-proxied.invalid/p"]
    assert [path for _, path, _ in direct.requests] == ["/d"]


# -- the registry client --------------------------------------------------------------


def test_the_registry_client_sends_no_netrc_credentials(tmp_path, store, busybox_image, netrc_env, monkeypatch):
    for name, value in netrc_env.items():
        monkeypatch.setenv(name, value)
    proxy = FaultProxy(busybox_image.registry.host)  # records every request's headers
    client = RegistryClient(store, auth=no_credentials)
    try:
        resolved = client.resolve(Reference.parse(f"{proxy.host}/busybox:latest"))
        client.fetch_blob(resolved.ref, resolved.layers[0])
    finally:
        client.close()
        proxy.close()
    assert len(proxy.requests) >= 3
    assert [headers for _, _, headers in proxy.requests if "Authorization" in headers] == []


def test_a_netrc_entry_does_not_replace_the_registrys_credentials(tmp_path, store, auth_registry, monkeypatch):
    # docker's config gives the right credentials; the netrc has a wrong
    # password for the same host, which requests would put in their place.
    monkeypatch.setenv("HOME", str(tmp_path))
    _netrc(tmp_path / ".netrc", password="wrong")
    creds = Credentials(auth_registry.username, auth_registry.password)
    client = RegistryClient(store, auth=lambda registry: creds)
    try:
        with pytest.raises(RegistryError, match="not found|unknown"):
            client.resolve(Reference.parse(f"{auth_registry.host}/never-pushed:latest"))
        client.check_login(auth_registry.host)
    finally:
        client.close()


# -- git ------------------------------------------------------------------------------


class GitServer:
    """`git http-backend` (smart HTTP) over the bare repositories under
    `base`, answering 401 to a request without the Basic credentials."""

    def __init__(self, base: Path):
        self.base = base
        self.server = RecordingServer(self._answer)
        self.url = self.server.url

    def _answer(self, handler) -> None:
        if handler.headers.get("Authorization") != BASIC:
            send(handler, 401, headers={"WWW-Authenticate": 'Basic realm="git"'})
            return
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        path, _, query = handler.path.partition("?")
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.base), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": handler.command,
               "CONTENT_TYPE": handler.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "HTTP_CONTENT_ENCODING": handler.headers.get("Content-Encoding", ""),
               "REMOTE_USER": USER, "REMOTE_ADDR": "127.0.0.1", "GIT_CONFIG_NOSYSTEM": "1"}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60).stdout
        head, _, data = out.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key] = value
        send(handler, status, data, headers)

    def close(self) -> None:
        self.server.close()


def _git(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def private_repo(tmp_path, busybox_image):
    """A repository holding a Dockerfile, served at URL/repo.git behind Basic auth."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY . /src/\n")
    (work / "private.txt").write_text("private\n")
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-q", "-m", "private")):
        assert _git(*args, cwd=work).returncode == 0
    base = tmp_path / "served"
    base.mkdir()
    assert _git("clone", "-q", "--bare", str(work), str(base / "repo.git"), cwd=tmp_path).returncode == 0
    server = GitServer(base)
    yield server
    server.close()


@pytest.fixture(params=["netrc", "credential-helper"])
def git_home(request, tmp_path) -> Path:
    """A HOME whose netrc, or whose ~/.gitconfig's credential helper, holds the credentials."""
    home = tmp_path / "git-home"
    home.mkdir()
    if request.param == "netrc":
        _netrc(home / ".netrc")
    else:
        (home / ".gitconfig").write_text(
            f'[credential]\n\thelper = "!f() {{ echo username={USER}; echo password={PASSWORD}; }}; f"\n')
    return home


def test_git_sources_use_none_of_the_hosts_git_credentials(tmp_path, busybox_image, private_repo, git_home):
    url = f"{private_repo.url}/repo.git"
    host_env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "XDG_")) and k != "NETRC"}
    # The attack is live: git as the host user runs it clones with these credentials.
    plain = _git("ls-remote", url, cwd=tmp_path, env={**host_env, "HOME": str(git_home), "GIT_TERMINAL_PROMPT": "0"})
    assert plain.returncode == 0, plain.stderr
    assert _saw_credentials(private_repo.server)
    private_repo.server.requests.clear()
    for dockerfile, args in ((None, (f"{url}#main",)),
                             (f"FROM {busybox_image.ref}\nADD {url}#main /src/\n", ())):
        done = _pybuild(tmp_path, dockerfile, *args, env={"HOME": str(git_home)})
        assert done.returncode == 1, done.stderr
        assert f"Authentication failed for '{url}/'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert private_repo.server.requests
    assert not _saw_credentials(private_repo.server)
    assert not [p for p in Path(tmp_path / "root").rglob("private.txt")]


def test_git_keeps_the_credentials_of_its_own_url(tmp_path, busybox_image, private_repo):
    url = f"{private_repo.url.replace('http://', f'http://{USER}:{PASSWORD}@')}/repo.git"
    out = tmp_path / "out"
    done = _pybuild(tmp_path, None, "-o", f"type=local,dest={out}", f"{url}#main", env={"HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert (out / "src" / "private.txt").read_text() == "private\n"


def test_git_runs_with_an_environment_of_its_own(tmp_path, monkeypatch):
    from builder.ops.source import git

    # What the host's environment would otherwise hand git: a protocol
    # allow-list outranking the refused transports, config of its own.
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file:ext")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "credential.helper")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "store")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    env = git._environment(str(tmp_path / "home"))
    assert env["HOME"] == str(tmp_path / "home")
    assert env["GIT_CONFIG_GLOBAL"] == os.devnull and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    for name in ("GIT_ALLOW_PROTOCOL", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "NETRC"):
        assert name not in env
    assert env["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"
    assert env["https_proxy"] == "http://proxy.invalid:3128"
    assert shutil.which("git", path=env["PATH"])
