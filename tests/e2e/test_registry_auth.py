"""Issue 6: `pybuild login/logout` and credentials at work — push to and
build FROM registries demanding basic and token auth — and the password
never shows in outputs, the root, or the image."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from fixtures.busybox import skopeo_inspect


def pybuild(*args, env, stdin: str | None = None, check: bool = True):
    done = subprocess.run(["pybuild", *args], input=stdin, capture_output=True, text=True, timeout=180, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


@pytest.fixture
def docker_env(tmp_path):
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "docker-config"), PYBUILD_PROGRESS="plain")
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def _grep(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {n!r}" for n in needles if n in data]
    return found


def test_login_checks_and_saves_credentials_then_logout(auth_registry, token_registry, docker_env, tmp_path):
    config = tmp_path / "docker-config" / "config.json"
    bad = pybuild("login", auth_registry.host, "-u", auth_registry.username, "--password-stdin",
                  env=docker_env, stdin="wrong\n", check=False)
    assert bad.returncode == 1 and "unauthorized" in bad.stderr
    assert not config.exists()

    token_reg, _ = token_registry
    for host in (auth_registry.host, token_reg.host):
        done = pybuild("login", host, "-u", auth_registry.username, "--password-stdin",
                       env=docker_env, stdin=auth_registry.password + "\n")
        assert "Login Succeeded" in done.stdout
        assert auth_registry.password not in done.stdout + done.stderr
    body = json.loads(config.read_text())
    pair = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    assert body["auths"] == {auth_registry.host: {"auth": pair}, token_reg.host: {"auth": pair}}
    assert config.stat().st_mode & 0o777 == 0o600

    assert "Removing login credentials" in pybuild("logout", token_reg.host, env=docker_env).stdout
    assert set(json.loads(config.read_text())["auths"]) == {auth_registry.host}
    assert "Not logged in" in pybuild("logout", token_reg.host, env=docker_env).stdout


def test_push_and_pull_with_saved_credentials(busybox_image, auth_registry, token_registry, docker_env,
                                              tmp_path):
    token_reg, _ = token_registry
    user, password = auth_registry.username, auth_registry.password
    for host in (auth_registry.host, token_reg.host):
        pybuild("login", host, "-u", user, "--password-stdin", env=docker_env, stdin=password)

    # Build and push to both protected registries.
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN echo pushed > /marker\n")
    basic_ref, token_ref = f"{auth_registry.host}/auth/app:1", f"{token_reg.host}/auth/app:1"
    root = tmp_path / "root"
    pushed = pybuild("build", "--root", str(root), "-t", basic_ref, "-t", token_ref, "--push",
                     str(context), env=docker_env)
    creds = f"{user}:{password}"
    for ref in (basic_ref, token_ref):
        assert skopeo_inspect(f"docker://{ref}", creds=creds)["Layers"]

    # Build FROM each protected image in a fresh root: the base is pulled with the credentials.
    outputs = []
    for n, ref in enumerate((basic_ref, token_ref)):
        ctx = tmp_path / f"ctx{n}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN cat /marker > /copied\n")
        out = tmp_path / f"rootfs{n}"
        outputs.append(pybuild("build", "--root", str(tmp_path / f"root{n}"), "-o", f"type=local,dest={out}",
                               "-o", f"type=oci,dest={tmp_path / f'image{n}.tar'}", str(ctx), env=docker_env))
        assert (out / "copied").read_text() == "pushed\n"

    # Without credentials the protected base cannot be pulled.
    anonymous = dict(docker_env, DOCKER_CONFIG=str(tmp_path / "empty-config"))
    ctx = tmp_path / "ctx0"
    refused = pybuild("build", "--root", str(tmp_path / "root-anon"), str(ctx), env=anonymous, check=False)
    assert refused.returncode == 1 and "unauthorized" in refused.stderr.lower()

    # The password (plain or base64) never reaches an output, the roots or the images.
    needles = [password.encode(), base64.b64encode(creds.encode())]
    for done in (pushed, refused, *outputs):
        assert password not in done.stdout + done.stderr
    leaks = [hit for hit in _grep(tmp_path, needles) if "docker-config" not in hit]
    assert leaks == []
