"""`--secret` and `--ssh` options: values read once, kept out of every key.

A secret's bytes live only in this process's memory and, while a RUN uses
them, in a file on a private tmpfs (/dev/shm) that is removed right after
the step; they never reach the root directory, a key, a log or an image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from builder.errors import PybuildError

# BuildKit's secretsprovider.MaxSecretSize: a secret is a key or a token,
# and each one is held in memory for the whole build.
MAX_SECRET_SIZE = 500 * 1024


class SecretError(PybuildError):
    pass


@dataclass(frozen=True)
class Secrets:
    values: Mapping[str, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show values, not even in a debug traceback
        return f"Secrets(ids={sorted(self.values)})"


def _options(text: str) -> dict[str, str]:
    options = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise SecretError(f"invalid option {part!r} in {text!r}: expected key=value")
        options[key.strip().lower()] = value
    return options


def parse_secrets(specs, environ: Mapping[str, str] | None = None) -> Secrets:
    """`id=ID,src=FILE` | `id=ID,env=VAR` | `id=ID` (env var ID, else file ID),
    `type=file|env` accepted, as in `docker buildx build --secret`."""
    environ = os.environ if environ is None else environ
    values: dict[str, bytes] = {}
    for spec in specs:
        secret_id, src, env = _source(spec, environ)
        if env is not None:
            if env not in environ:
                raise SecretError(f"secret {secret_id}: environment variable {env} is not set")
            values[secret_id] = _capped(secret_id, environ[env].encode())
        else:
            values[secret_id] = _capped(secret_id, _read_at_most(secret_id, src, MAX_SECRET_SIZE + 1))
    return Secrets(values)


def secret_variables(specs) -> set[str]:
    """The environment variables `specs` read, or may read (an `id=ID`
    alone reads $ID when it is set): what must never be kept, even hashed."""
    found = set()
    for spec in specs:
        try:
            secret_id, _, env = _source(spec, {})
        except SecretError:
            continue  # refused when the build parses it
        found |= {env or secret_id}
    return found


def _source(spec: str, environ: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """A spec's id, and the file or the environment variable it reads."""
    opts = _options(spec) if "=" in spec else {"id": spec}
    secret_id = opts.get("id")
    if not secret_id:
        raise SecretError(f"secret {spec!r}: id is required")
    src = opts.get("src") or opts.get("source")
    env = opts.get("env")
    if opts.get("type") == "env" and not env:
        env = src or secret_id
        src = None
    if src is None and env is None:
        env = secret_id if secret_id in environ else None
        src = None if env else secret_id
    return secret_id, src, env


def _read_at_most(secret_id: str, src: str, limit: int) -> bytes:
    """Up to `limit` bytes of `src`, whatever it is (a regular file, a pipe,
    /dev/zero): never the whole of something endless. A buffered read of
    `limit` bytes returns short only at the end of the file."""
    try:
        with open(src, "rb") as source:
            return source.read(limit)
    except OSError as exc:
        raise SecretError(f"secret {secret_id}: cannot read {src}: {exc.strerror}") from exc


def _capped(secret_id: str, value: bytes) -> bytes:
    if len(value) > MAX_SECRET_SIZE:
        raise SecretError(f"secret {secret_id} too big: max size 500KB ({MAX_SECRET_SIZE} bytes)")
    return value


def parse_ssh(specs, environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """`ID` (forwards $SSH_AUTH_SOCK), `ID=SOCKET`, or `ID=KEY[,KEY...]`
    (private key files, loaded into an agent of the build's own: see
    builder/ops/ssh_agent.py). `ID` defaults to `default`."""
    environ = os.environ if environ is None else environ
    result: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        ssh_id, sep, paths = spec.partition("=")
        ssh_id = ssh_id or "default"
        found = tuple(p for p in paths.split(",") if p) if sep else (environ.get("SSH_AUTH_SOCK", ""),)
        if not found or not found[0]:
            raise SecretError(f"ssh {ssh_id}: no socket given and SSH_AUTH_SOCK is not set")
        for path in found:
            if not os.path.exists(path):
                raise SecretError(f"ssh {ssh_id}: {path} does not exist")
        result[ssh_id] = found
    return result
