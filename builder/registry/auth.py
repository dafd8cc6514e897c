"""Registry credentials as `docker login` leaves them, and auth challenges.

No HTTP here: `builder.registry.client` asks this module for credentials and for
the meaning of a `WWW-Authenticate` header, and does the talking itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from builder.errors import RegistryError
from runtime import lifeline

# The key `docker login` uses for Docker Hub, a relic of the v1 API.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
# A credential helper answering with this user name hands out an identity
# (refresh) token instead of a password.
_IDENTITY_TOKEN_USER = "<token>"
_HELPER_TIMEOUT = 30


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str | None = None

    def __repr__(self) -> str:
        # Never let a secret reach a log or a traceback.
        return f"Credentials(username={self.username!r}, password=***)"


CredentialSource = Callable[[str], "Credentials | None"]


def no_credentials(registry: str) -> None:
    """For anonymous clients (and tests that must not read ~/.docker)."""
    return None


def _config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _host_of(key: str) -> str:
    """`https://host:5000/v1/` → `host:5000`, as docker matches auth keys."""
    return key.split("://", 1)[-1].split("/", 1)[0]


class DockerConfigAuth:
    """Credentials from docker's config.json: `auths` (base64 `user:pass` or
    an identity token), `credHelpers` per registry, and `credsStore`."""

    def __init__(self, config_path: Path | None = None):
        self._path = Path(config_path) if config_path else _config_path()

    def _load(self) -> Mapping:
        try:
            return json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read docker config {self._path}: {exc}") from exc

    def __call__(self, registry: str) -> Credentials | None:
        config = self._load()
        names = _DOCKER_HUB_NAMES if registry in _DOCKER_HUB_NAMES else (registry,)
        server = DOCKER_HUB_AUTH_KEY if registry in _DOCKER_HUB_NAMES else registry
        helpers = config.get("credHelpers") or {}
        for name in names:
            if name in helpers:
                return _from_helper(helpers[name], server)
        if config.get("credsStore"):
            found = _from_helper(config["credsStore"], server)
            if found is not None:
                return found
        auths = config.get("auths") or {}
        for key, entry in auths.items():
            if _host_of(key) in names or key == server:
                return _from_auth_entry(key, entry)
        return None


def _from_auth_entry(key: str, entry: Mapping) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(identity_token=entry["identitytoken"])
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise RegistryError(f"invalid auth for {key} in docker config: {exc}") from exc
        user, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryError(f"invalid auth for {key} in docker config: no ':' in user:password")
        return Credentials(user, password)
    if entry.get("username"):
        return Credentials(entry["username"], entry.get("password", ""))
    return None


def _from_helper(helper: str, server: str) -> Credentials | None:
    """Run `docker-credential-<helper> get`, the credential helper protocol:
    the server URL on stdin, `{"Username", "Secret"}` on stdout."""
    program = f"docker-credential-{helper}"
    path = shutil.which(program)
    if path is None:
        raise RegistryError(f"credential helper {program} not found in PATH")
    try:
        # under the supervisor: a helper waiting on a keyring dies with
        # pybuild, however pybuild dies
        done = lifeline.run([path, "get"], input=server.encode(), timeout=_HELPER_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise RegistryError(f"credential helper {program} did not answer in {_HELPER_TIMEOUT}s") from exc
    if done.returncode != 0:
        message = (done.stdout or done.stderr).decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return None
        raise RegistryError(f"credential helper {program} failed: {message}")
    try:
        answer = json.loads(done.stdout)
    except ValueError as exc:
        raise RegistryError(f"credential helper {program} sent invalid JSON") from exc
    if answer.get("Username") == _IDENTITY_TOKEN_USER:
        return Credentials(identity_token=answer.get("Secret", ""))
    return Credentials(answer.get("Username", ""), answer.get("Secret", ""))


@dataclass(frozen=True)
class Challenge:
    """A parsed `WWW-Authenticate` header: scheme (lowercase) and parameters."""

    scheme: str
    params: Mapping[str, str]


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def parse_challenge(header: str | None) -> Challenge | None:
    """`Bearer realm="https://auth",service="reg",scope="repository:a:pull,push"`.

    Quoted values may hold commas (the scope above), so the parameters are
    matched one by one instead of split on `,`.
    """
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _PARAM_RE.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(scheme.lower(), params)


def auth_key(registry: str) -> str:
    """The `auths` key `docker login` writes for a registry."""
    return DOCKER_HUB_AUTH_KEY if registry in _DOCKER_HUB_NAMES else registry


def _write_config(path: Path, config: Mapping) -> None:
    """Replace config.json atomically, readable by its owner only."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=".config.json.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(config, out, indent="\t")
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(name, 0o600)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def store_credentials(registry: str, creds: Credentials, config_path: Path | None = None) -> Path:
    """Save credentials as `docker login` does without a credential store:
    `auths[KEY].auth = base64(user:password)` in config.json, every other
    key of the file kept. Returns the file written."""
    path = Path(config_path) if config_path else _config_path()
    config = dict(DockerConfigAuth(path)._load())
    if config.get("credsStore") or registry in (config.get("credHelpers") or {}):
        raise RegistryError(f"{path} names a credential helper for {registry}: "
                            "use `docker login` (pybuild writes only `auths`)")
    auths = dict(config.get("auths") or {})
    pair = f"{creds.username}:{creds.password}".encode()
    auths[auth_key(registry)] = {"auth": base64.b64encode(pair).decode()}
    config["auths"] = auths
    _write_config(path, config)
    return path


def erase_credentials(registry: str, config_path: Path | None = None) -> bool:
    """Forget a registry's `auths` entry; False when there was none."""
    path = Path(config_path) if config_path else _config_path()
    config = dict(DockerConfigAuth(path)._load())
    auths = dict(config.get("auths") or {})
    names = _DOCKER_HUB_NAMES if registry in _DOCKER_HUB_NAMES else (registry,)
    keys = [k for k in auths if k == auth_key(registry) or _host_of(k) in names]
    if not keys:
        return False
    for key in keys:
        del auths[key]
    config["auths"] = auths
    _write_config(path, config)
    return True
