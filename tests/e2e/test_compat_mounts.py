"""`RUN --mount` against BuildKit's behaviour.

Each expectation names where it comes from: current BuildKit's source
(moby/buildkit: frontend/dockerfile/instructions/commands_runmount.go,
dockerfile2llb/convert_runmount.go, convert_secrets.go, convert_ssh.go,
client/llb/exec.go) or what docker 20.10's BuildKit printed for the same
Dockerfile, when the two agree. No docker is needed: the expected results
are written down here. Builds that run steps declare `ARG ISOLATION`, so
that the second executor does not reuse the first one's cached steps.
"""

from __future__ import annotations

import pytest

from e2e.helpers import BUILD_ERRORS, ISOLATIONS, build_image
from e2e.test_run_mounts import ssh_agent  # noqa: F401  (a fixture)

pytestmark = pytest.mark.e2e


# commands_runmount.go parseMount/validateMount, checked in that order: a key
# whose meaning depends on the type (`required`, `size`) is judged against the
# type given before it. docker 20.10 printed the same text for each case its
# older frontend knew (it had no `size`).
@pytest.mark.parametrize("mount, message", [
    ("foo,target=/x", "invalid field 'foo' must be a key=value pair"),
    ("taget=/x", "unexpected key 'taget' in 'taget=/x' (did you mean target?)"),
    ("target=/x,mode=0755", 'mode not allowed for "bind" type mounts'),
    ("type=tmpfs,target=/x,uid=1", 'uid not allowed for "tmpfs" type mounts'),
    ("type=cache,target=/x,mode=999", "invalid value 999 for mode"),
    ("type=cache,target=/x,mode=+755", "invalid value +755 for mode"),
    ("type=cache,target=/x,gid=-1", "invalid value -1 for gid"),
    ("type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
    ("required,type=secret,id=x", "unexpected key 'required' for mount type 'bind'"),
    ("type=cache,target=/x,size=1m", "unexpected key 'size' for mount type 'cache'"),
    ("type=tmpfs,target=/x,size=abc", "invalid value for size: abc"),
    ("type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
    ("type=secret,id=x,sharing=locked", "secret mount should not define sharing"),
    ("type=secret,id=x,from=foo", "secret mount should not have a from"),
    ("type=secret,source=x,id=y", "both source and id can't be set"),
    ("type=secret", "invalid secret mount. one of source, target required"),
    ("type=ssh,source=x", "ssh does not support source"),  # convert_ssh.go
    ("type=bnd,target=/x", 'unsupported mount type "bnd" (did you mean bind?)'),
    ("type=cache,target=/x,sharing=lockd", 'unsupported sharing value "lockd" (did you mean locked?)'),
    ("from=$X,target=/x", "'from' doesn't support variable expansion, define alias stage instead"),
    ("target=/", 'invalid mount target "/"'),  # convert_runmount.go
])  # fmt: skip
def test_mount_option_errors(tmp_path, root, busybox_image, mount, message):
    with pytest.raises(BUILD_ERRORS) as err:
        build_image(tmp_path, root, f"FROM {busybox_image.ref}\nARG X=a\nRUN --mount={mount} true\n",
                    export=False, local=False)
    assert str(err.value) == f"Dockerfile:3: {message}"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_mount_values_buildkit_accepts(tmp_path, root, busybox_image, isolation):
    # Go's strconv.ParseBool takes t/F/1 but not "yes"; `id` is accepted (and
    # unused) on a bind; with no target a mount lands on the working
    # directory (convert_runmount.go joins "" to WORKDIR). docker 20.10
    # built all three steps.
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
WORKDIR /w
RUN --mount=type=bind,source=d,target=/x,ro=t,id=unused [ "$(cat /x/f)" = f ] && ! touch /x/g 2>/dev/null
RUN --mount=type=bind,source=d,rw=F ! touch /w/g 2>/dev/null && [ "$(cat /w/f)" = f ] && echo ok > /done
""", files={"d/f": "f\n"}, build_args={"ISOLATION": isolation}, isolation=isolation)
    assert built.read_text("/done") == "ok\n"
    assert not built.exists("/w/f")


def test_mount_on_root_via_workdir_fails(tmp_path, root, busybox_image):
    # convert_runmount.go: the target joined to WORKDIR must not be "/"
    with pytest.raises(BUILD_ERRORS, match='invalid mount target "/"'):
        build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN --mount=type=bind,source=d true\n",
                    files={"d/f": "f\n"}, export=False, local=False)


def test_missing_context_source_is_not_a_copy_error(tmp_path, root, busybox_image):
    # BuildKit fails computing the step's cache key: '"/nope" not found'
    # (docker 20.10); nothing about COPY
    with pytest.raises(BUILD_ERRORS) as err:
        build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN --mount=source=nope,target=/x true\n",
                    export=False, local=False)
    assert '"/nope": not found' in str(err.value) and "COPY" not in str(err.value)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_mounts_are_made_in_target_order(tmp_path, root, busybox_image, isolation, tmp_path_factory):
    # client/llb/exec.go sorts an ExecOp's mounts by target, and adds secrets
    # after them: a mount under another one is seen whatever the flag order.
    # docker 20.10: "/m/a /m/a/b" and the secret's value.
    secret = tmp_path_factory.mktemp("s") / "sec"
    secret.write_text("s3cr3t\n")
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
ARG ISOLATION
RUN --mount=type=tmpfs,target=/m/a/b --mount=type=tmpfs,target=/m/a \\
    grep -o ' /m/a[^ ]* ' /proc/mounts | tr -d ' ' | tr '\\n' ' ' > /order
RUN --mount=type=secret,id=sec,target=/m2/s --mount=type=tmpfs,target=/m2 cp /m2/s /seen
""", secrets=[f"id=sec,src={secret}"], build_args={"ISOLATION": isolation}, isolation=isolation)
    assert built.read_text("/order") == "/m/a /m/a/b "
    assert built.read_text("/seen") == "s3cr3t\n"
    assert not built.exists("/m") and not built.exists("/m2")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_cache_mount_details(tmp_path, root, busybox_image, isolation):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref} AS seed
RUN mkdir /seed && echo seeded > /seed/f && chown 1000:1000 /seed && chmod 0700 /seed

FROM {busybox_image.ref}
ARG ISOLATION
WORKDIR /w
# the default id is path.Clean(target) as written (convert_runmount.go):
# /c-$ISOLATION/ and /c-$ISOLATION are one cache
RUN --mount=type=cache,target=/c-$ISOLATION/ echo one > /c-$ISOLATION/a
RUN --mount=type=cache,target=/c-$ISOLATION cp /c-$ISOLATION/a /shared
# `ro` makes the cache read-only (docker 20.10: touch failed)
RUN --mount=type=cache,target=/r,id=ro-$ISOLATION,ro ! touch /r/x 2>/dev/null && echo ro > /ro
# seeded from `source`, the cache is that directory, its mode and owner
# included; uid/gid/mode apply only to a cache made from nothing
# (setCacheUIDGID). docker 20.10: "700 1000:1000 seeded"
RUN --mount=type=cache,target=/s,id=seed-$ISOLATION,from=seed,source=/seed,mode=0755,uid=5 \\
    echo "$(stat -c '%a %u:%g' /s) $(cat /s/f)" > /seeded
""", build_args={"ISOLATION": isolation}, isolation=isolation)
    assert built.read_text("/shared") == "one\n"
    assert built.read_text("/ro") == "ro\n"
    assert built.read_text("/seeded") == "700 1000:1000 seeded\n"


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
