"""`RUN --mount` against BuildKit's behaviour, where a recorded case of
testdata/compat cannot say it: these need `--secret` or `--ssh`, which the
compat harness does not pass (the mount-* and mount-err-* cases, recorded
from docker 26, hold the rest: option errors, bind/cache/tmpfs values,
mount order, cache ids, sharing and seeding).

Each expectation names where it comes from: current BuildKit's source
(moby/buildkit: frontend/dockerfile/dockerfile2llb/convert_secrets.go,
convert_ssh.go, client/llb/exec.go) or what docker 20.10's BuildKit printed
for the same Dockerfile, when the two agree. Builds that run steps declare
`ARG ISOLATION`, so that the second executor does not reuse the first
one's cached steps.
"""

from __future__ import annotations

import pytest

from e2e.helpers import ISOLATIONS, build_image
from e2e.test_run_mounts import ssh_agent  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_secrets_are_mounted_after_the_other_mounts(tmp_path, root, busybox_image, isolation, tmp_path_factory):
    # client/llb/exec.go adds secrets after the other mounts, sorted by
    # target (testdata/compat/mount-order-nested): a secret under a tmpfs
    # is seen. docker 20.10 printed the secret's value.
    secret = tmp_path_factory.mktemp("s") / "sec"
    secret.write_text("s3cr3t\n")
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN --mount=type=secret,id=sec,target=/m2/s --mount=type=tmpfs,target=/m2 cp /m2/s /seen
""", secrets=[f"id=sec,src={secret}"], build_args={"ISOLATION": isolation}, isolation=isolation)
    assert built.read_text("/seen") == "s3cr3t\n"
    assert not built.exists("/m2")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_secret_names(tmp_path, root, busybox_image, isolation):
    # convert_secrets.go: `source` names the secret as `id` does, and the
    # default path is /run/secrets/ + path.Base(id). docker 20.10 printed
    # the value for source=sec and listed "sec" under /run/secrets for id=a/sec.
    secret = tmp_path / "sec.txt"
    secret.write_text("s3cr3t\n")
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN --mount=type=secret,source=sec cp /run/secrets/sec /by-source
RUN --mount=type=secret,id=a/sec ls /run/secrets > /listing && cp /run/secrets/sec /by-path-id
""", secrets=[f"id=sec,src={secret}", f"id=a/sec,src={secret}"], build_args={"ISOLATION": isolation},
                        isolation=isolation)
    assert built.read_text("/by-source") == "s3cr3t\n"
    assert built.read_text("/listing") == "sec\n"
    assert built.read_text("/by-path-id") == "s3cr3t\n"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_ssh_socket_paths(tmp_path, root, busybox_image, isolation, ssh_agent, monkeypatch):  # noqa: F811
    # client/llb/exec.go: default sockets are ssh_agent.N by rank among the
    # step's ssh mounts, and SSH_AUTH_SOCK is the first one's path unless the
    # step's env has one; it is set even when the agent was not forwarded.
    # docker 20.10: ssh_agent.0 and ssh_agent.1 both sockets;
    # "[/run/buildkit/ssh_agent.0]" with no socket; "/preset".
    sock, _ = ssh_agent
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN --mount=type=ssh,id=other --mount=type=ssh \\
    test -S /run/buildkit/ssh_agent.0 && test -S /run/buildkit/ssh_agent.1 && echo "$SSH_AUTH_SOCK" > /two
RUN --mount=type=ssh,id=absent echo "$SSH_AUTH_SOCK" > /absent && ! test -e "$SSH_AUTH_SOCK"
ENV SSH_AUTH_SOCK=/preset
RUN --mount=type=ssh echo "$SSH_AUTH_SOCK" > /preset-kept
""", ssh=["default", f"other={sock}"], build_args={"ISOLATION": isolation}, isolation=isolation)
    assert built.read_text("/two") == "/run/buildkit/ssh_agent.0\n"
    assert built.read_text("/absent") == "/run/buildkit/ssh_agent.0\n"
    assert built.read_text("/preset-kept") == "/preset\n"
    assert not built.exists("/run/buildkit")


def test_secret_targets_leave_nothing(tmp_path, root, busybox_image, tmp_path_factory):
    # docker 26 with the same secret: no /m, no /run/secrets in the image,
    # and /old, where a target was made and removed, keeps its mtime (as
    # the mount-target-parent-mtime case records for the other mounts)
    secret = tmp_path_factory.mktemp("s") / "sec"
    secret.write_text("s3cr3t\n")
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN mkdir -m 0755 /old && touch -d @1500000000 /old
RUN --mount=type=secret,id=s,target=/m/secret/file --mount=type=secret,id=s,target=/old/sfile \\
    --mount=type=secret,id=s cat /m/secret/file /run/secrets/s > /seen
""", secrets=[f"id=s,src={secret}"])
    assert built.read_text("/seen") == "s3cr3t\ns3cr3t\n"
    assert not built.exists("/m") and not built.exists("/run") and not built.exists("/old/sfile")
    assert built.path("/old").stat().st_mtime == 1_500_000_000
    names = {member.name.rstrip("/") for member in built.layer_members(-1)}
    assert "old" not in names and not any(name.startswith(("m", "run")) for name in names)
