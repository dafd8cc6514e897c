"""Secrets (`--secret` from a file and from the environment) and `--ssh`
(a real ssh-agent) used by RUN steps: their bytes must appear nowhere —
not under the root (blobs, snapshots, index.db, logs), not in any output
(OCI tar, docker tar, blobs pushed to the registry's storage), not in the
progress output, the metadata file, or an error message."""

from __future__ import annotations

import os
import secrets as random_secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ssh_agent(tmp_path):
    """A real ssh-agent on a socket, holding one fresh ed25519 key."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        subprocess.run(["ssh-add", "-q", str(key)], check=True, timeout=30, capture_output=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(sock)})
        private = key.read_text()
        body = "".join(line for line in private.splitlines() if not line.startswith("-----"))
        key.unlink()
        yield sock, body
    finally:
        agent.kill()
        agent.wait()


def _pybuild(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT)


def _files_containing(top: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in top.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for needle in needles:
                if needle in data:
                    found.append(f"{path}: {needle[:8]!r}...")
    return found


def test_secret_bytes_appear_nowhere(tmp_path, registry, busybox_image, ssh_agent):
    sock, key_body = ssh_agent
    file_secret = f"file-secret-{random_secrets.token_hex(16)}"
    env_secret = f"env-secret-{random_secrets.token_hex(16)}"
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(file_secret)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"""FROM {busybox_image.ref}
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = "{file_secret[:12]}$(cat /run/secrets/tok | cut -c13-)" && wc -c < /run/secrets/tok > /tok-size
RUN --mount=type=secret,id=envtok,env=TOK test -n "$TOK" && echo ${{#TOK}} > /env-size
RUN --mount=type=secret,id=tok,target=/etc/app/token,uid=1000,mode=0400 stat -c %u:%a /etc/app/token > /token-stat
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo agent > /ssh
RUN ls /run/secrets 2>/dev/null | wc -l > /left
""")
    root = tmp_path / "root"
    out = tmp_path / "out"
    out.mkdir()
    ref = f"{registry.host}/secret-test:1"
    done = _pybuild("build", "--root", str(root), "--progress", "plain", "--debug",
                    "--secret", f"id=tok,src={secret_file}", "--secret", "id=envtok,env=TOKVAR",
                    "--ssh", f"default={sock}", "--metadata-file", str(out / "meta.json"),
                    "-o", f"type=oci,dest={out / 'image.oci.tar'}", "-o", f"type=docker,dest={out / 'image.docker.tar'}",
                    "-o", f"type=local,dest={out / 'rootfs'}", "-o", f"type=registry,name={ref}",
                    str(context), env={"TOKVAR": env_secret})
    assert done.returncode == 0, done.stderr.decode()
    assert (out / "rootfs" / "tok-size").read_text().strip() == str(len(file_secret))
    assert (out / "rootfs" / "env-size").read_text().strip() == str(len(env_secret))
    assert (out / "rootfs" / "token-stat").read_text() == "1000:400\n"
    assert (out / "rootfs" / "ssh").read_text() == "agent\n"
    assert (out / "rootfs" / "left").read_text() == "0\n"
    assert not (out / "rootfs" / "etc" / "app" / "token").exists()

    needles = [file_secret.encode(), env_secret.encode(), key_body[:40].encode()]
    for stream in (done.stdout, done.stderr):
        assert not any(n in stream for n in needles)
    assert _files_containing(root, needles) == []
    assert _files_containing(out, needles) == []
    assert _files_containing(registry.root, needles) == []
    # nothing left in the tmpfs where secrets live during a step
    assert not any(p.name.startswith("pybuild-secret-") for p in Path("/dev/shm").iterdir())


@pytest.mark.parametrize("isolation", ["builtin", "oci"])
def test_failing_step_using_a_secret_does_not_reveal_it(tmp_path, busybox_image, isolation):
    env_secret = f"env-secret-{random_secrets.token_hex(16)}"
    file_secret = f"file-secret-{random_secrets.token_hex(16)}"
    (tmp_path / "token.txt").write_text(file_secret)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {busybox_image.ref}\n"
        "RUN --mount=type=secret,id=tok --mount=type=secret,id=envtok,env=TOK "
        "test -s /run/secrets/tok && echo working && exit 3\n")
    root = tmp_path / "root"
    for extra in ((), ("--debug",)):
        done = _pybuild("build", "--root", str(root), "--progress", "plain", "--isolation", isolation, *extra,
                        "--secret", f"id=tok,src={tmp_path / 'token.txt'}", "--secret", "id=envtok,env=TOKVAR",
                        str(context), env={"TOKVAR": env_secret})
        assert done.returncode == 1
        stderr = done.stderr.decode()
        assert "did not complete successfully: exit code: 3" in stderr
        assert env_secret not in stderr and file_secret not in stderr
        assert env_secret.encode() not in done.stdout and file_secret.encode() not in done.stdout
    assert _files_containing(root, [env_secret.encode(), file_secret.encode()]) == []
