"""Failures of `pybuild build` next to `docker build`'s: exit 1, one
`ERROR:` line a user can act on, no traceback, nothing left in the store.

Sources: a differential sweep against docker 20.10 (BuildKit) and current
BuildKit's wording; where pybuild says more than docker, the test names why.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from cli_helpers import write_context


def _errors(done: subprocess.CompletedProcess) -> list[str]:
    text = done.stderr.decode()
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if line.startswith("ERROR")]


def _docker_config(directory: Path, auths: dict) -> dict:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"auths": auths}))
    return {"DOCKER_CONFIG": str(directory)}


def _build_protected(cli, tmp_path, auth_registry, env):
    # Every manifest request of an htpasswd registry needs credentials, so
    # the image need not exist: the 401 comes before any 404.
    context = write_context(tmp_path / "ctx", f"FROM {auth_registry.host}/private/base:1\nRUN true\n")
    root = tmp_path / "root"
    done = cli.run("build", "--root", str(root), "--progress", "plain", "-t", "herr-private", str(context),
                   env=env)
    return done, root


def _images(cli, root: Path) -> str:
    return cli.run("images", "--root", str(root)).stdout.decode()


def test_protected_base_without_credentials_says_none_were_found(cli, tmp_path, auth_registry):
    # docker 20.10 prints "... failed with status code [manifests 1]: 401
    # Unauthorized" with or without credentials; pybuild also says which
    # registry lacked credentials and how to give them.
    env = _docker_config(tmp_path / "docker-config", {})
    done, root = _build_protected(cli, tmp_path, auth_registry, env)
    assert done.returncode == 1
    errors = _errors(done)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"ERROR: failed to resolve {auth_registry.host}/private/base:1: unauthorized")
    assert f"no credentials found for {auth_registry.host} (pybuild login {auth_registry.host})" in errors[0]
    assert "herr-private" not in _images(cli, root)


def test_protected_base_with_wrong_credentials_says_they_were_refused(cli, tmp_path, auth_registry):
    # The registry answers "authentication required" to a wrong password as
    # to none; telling the two apart saves a user looking for a missing login.
    wrong = base64.b64encode(f"{auth_registry.username}:not-the-password".encode()).decode()
    env = _docker_config(tmp_path / "docker-config", {auth_registry.host: {"auth": wrong}})
    done, root = _build_protected(cli, tmp_path, auth_registry, env)
    assert done.returncode == 1
    errors = _errors(done)
    assert len(errors) == 1, errors
    assert errors[0].endswith(f"; the credentials for {auth_registry.host} were refused")
    assert "no credentials found" not in errors[0]
    assert "not-the-password" not in done.stderr.decode() and wrong not in done.stderr.decode()
    assert "herr-private" not in _images(cli, root)


@pytest.mark.parametrize("args, message", [
    # docker: `invalid argument "a:b:c" for "-t, --tag" flag: invalid reference format`
    (["-t", "a:b:c"], "ERROR: invalid reference format: 'a:b:c'"),
    # BuildKit's dockerfile frontend: `target stage "nosuch" could not be found`
    (["--target", "nosuch"], 'ERROR: target stage "nosuch" could not be found'),
    # BuildKit: `exporter "unknown" could not be found`
    (["-o", "type=unknown"], "ERROR: output 'type=unknown': unknown type 'unknown'"),
    (["-o", "type=oci"], "ERROR: output type=oci needs dest=PATH"),
    # a click usage error: one line too, without click's usage block
    (["--build-arg", "=x"], "ERROR: Invalid value for --build-arg: '=x': expected KEY=VALUE"),
])
def test_bad_flags_fail_with_one_line(cli, tmp_path, args, message):
    context = write_context(tmp_path / "ctx", "FROM scratch\nENV A=1\n")
    root = tmp_path / "root"
    done = cli.run("build", "--root", str(root), *args, str(context))
    assert done.returncode == 1
    assert _errors(done) == [message]
    assert b"Usage:" not in done.stderr and b"Try " not in done.stderr
    assert "a:b:c" not in _images(cli, root)


def test_an_unreachable_registry_names_the_image_the_build_wanted(cli, tmp_path):
    # BuildKit: "failed to resolve source metadata for REF: ..."; the
    # registry client alone only knows the host it could not reach.
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ref = f"127.0.0.1:{port}/gone/base:1"
    context = write_context(tmp_path / "ctx", f"FROM {ref}\nRUN true\n")
    done = cli.run("build", "--root", str(tmp_path / "root"), str(context))
    assert done.returncode == 1
    [error] = _errors(done)
    assert ref in error and "connection refused" in error, error
