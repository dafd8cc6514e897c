"""Issue 16: RUN as an ordinary user's pybuild runs it — every mount type,
ownership (COPY/ADD --chown and --chmod, USER 1000) as a root build writes
it into the layer tar, multi-stage, and networking (host by default, none)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.rootless import child_of
from fixtures.tools import require_tools
from rootless_helpers import Archive

ISOLATIONS = ("oci", "builtin")


def _interfaces(proc_net_dev: str) -> set[str]:
    """Interface names of a /proc/net/dev text (two header lines)."""
    return {line.split(":", 1)[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_ownership_stages_and_networks(rootless, busybox_image, isolation):
    context = rootless.write_context("ctx", f"""\
FROM {busybox_image.ref} AS tools
RUN echo from-a-stage > /tool

FROM {busybox_image.ref}
RUN echo "svc:x:1234:2345::/:/bin/sh" >> /etc/passwd && echo "svc:x:2345:" >> /etc/group \\
 && mkdir /work && chown 1000:1000 /work
COPY --chown=1000:1000 a /numeric
COPY --chown=svc:svc a /named
COPY --chmod=0640 a /moded
ADD --chown=65534:65534 a /added
COPY --from=tools /tool /copied-tool
RUN --mount=type=bind,from=tools,source=/tool,target=/mnt/tool cat /mnt/tool > /bound-tool
RUN --network=none cat /proc/net/dev > /net-none
RUN cat /proc/net/dev > /net-default
USER 1000
RUN id -u > /work/id && mkdir /work/dir && touch /work/dir/file
""", {"a": "a\n"})
    out = rootless.mkdir("out")
    rootless.ok("build", "--isolation", isolation, "-o", f"type=oci,dest={out / 'image'},tar=false", str(context))
    image = Archive(out / "image")

    # Each COPY is its own layer: [-1] the USER 1000 RUN, [-4] the two
    # network RUNs and the bind, [-5] COPY --from, then ADD, --chmod, named, numeric.
    numeric = image.layer_entry("numeric", index=-9)
    assert (numeric.uid, numeric.gid) == (1000, 1000)
    named = image.layer_entry("named", index=-8)
    assert (named.uid, named.gid) == (1234, 2345)
    moded = image.layer_entry("moded", index=-7)
    assert (moded.uid, moded.gid, moded.mode) == (0, 0, 0o640)
    added = image.layer_entry("added", index=-6)
    assert (added.uid, added.gid) == (65534, 65534)
    # Made by the step as uid 1000 of the user's namespace: 1000 in the tar,
    # as a root build writes it.
    for path in ("work/id", "work/dir", "work/dir/file"):
        entry = image.layer_entry(path, index=-1)
        assert (entry.uid, entry.gid) == (1000, 1000), path

    rootfs, special = rootless.mkdir("rootfs"), rootless.home / "special"
    rootless.ok("build", "--isolation", isolation, "-o", f"type=local,dest={rootfs}",
                "-o", f"type=local,dest={special},preserve-special=true", str(context))
    assert (rootfs / "work" / "id").read_text() == "1000\n"
    # A plain local export is the user's to read and remove; preserve-special
    # writes the image's owners, which outside the namespace are the user
    # (0) and its subordinate ids (START + id - 1).
    assert {path.lstat().st_uid for path in rootfs.rglob("*")} == {rootless.host.uid}
    for path, owner in (("work/id", 1000), ("named", 1234), ("added", 65534), ("bin/busybox", 0)):
        assert (special / path).lstat().st_uid == rootless.host.host_uid(owner), path
    assert (rootfs / "copied-tool").read_text() == "from-a-stage\n"
    assert (rootfs / "bound-tool").read_text() == "from-a-stage\n"
    assert _interfaces((rootfs / "net-none").read_text()) == {"lo"}
    # host networking, the default: the user's own network namespace.
    assert _interfaces((rootfs / "net-default").read_text()) == _interfaces(Path("/proc/net/dev").read_text())


def _ssh_add_tools(dest: Path) -> str:
    """ssh-add and the libraries ldd names for it, copied to `dest`, so that
    busybox (which has no ssh client) runs it through the host's loader;
    returns the loader's file name."""
    program = shutil.which("ssh-add")
    dest.mkdir(parents=True)
    shutil.copy2(program, dest / "ssh-add")
    loader = ""
    listing = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        library = next((word for word in line.split() if word.startswith("/")), None)
        if library:
            shutil.copy2(library, dest / os.path.basename(library))
            loader = os.path.basename(library) if "ld-linux" in library else loader
    return loader


@pytest.fixture
def user_agent(rootless):
    """An ssh-agent of the user's own (socket in its HOME) holding one new
    key: yields (socket, the key's comment)."""
    require_tools("ssh-agent", "ssh-keygen", "ssh-add")
    key = rootless.home / "id_ed25519"
    rootless.as_user("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rootless-agent-key", "-f", str(key),
                     check=True)
    sock = rootless.home / "agent.sock"
    agent = subprocess.Popen(["runuser", "-u", rootless.user, "--", "ssh-agent", "-D", "-a", str(sock)],
                             stdout=subprocess.DEVNULL, cwd=rootless.home)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        rootless.as_user("env", f"SSH_AUTH_SOCK={sock}", "ssh-add", "-q", str(key), check=True)
        yield sock, "rootless-agent-key"
    finally:
        # The agent itself, not runuser (which would say so on stderr).
        os.kill(child_of(agent.pid), signal.SIGTERM)
        agent.wait(timeout=10)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_every_run_mount(rootless, busybox_image, user_agent, isolation):
    sock, key_comment = user_agent
    loader = _ssh_add_tools(rootless.home / "ctx" / "tools")
    secret = rootless.home / "token"
    secret.write_text("s3cr3t-rootless")
    secret.chmod(0o600)
    rootless.give(secret)
    ssh_add = f"/tools/{loader} --library-path /tools /tools/ssh-add -l"
    dockerfile = f"""\
FROM {busybox_image.ref} AS stage
RUN mkdir /from-stage && echo staged > /from-stage/file

FROM {busybox_image.ref}
ARG ROUND
RUN --mount=type=bind,source=data,target=/data cat /data/file > /bind-context
RUN --mount=type=bind,from=stage,source=/from-stage,target=/data cat /data/file > /bind-stage
RUN --mount=type=cache,id=rootless-cache,target=/cache,uid=1000,gid=1001,mode=0750 \\
    echo "$ROUND" >> /cache/rounds && cat /cache/rounds > /cache-rounds && stat -c '%u %g %a' /cache > /cache-owner
RUN --mount=type=tmpfs,target=/scratch grep -q ' /scratch tmpfs ' /proc/mounts && echo in-tmpfs > /scratch/f \\
    && cat /scratch/f > /tmpfs-seen
RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-size
RUN --mount=type=secret,id=token,env=TOKEN echo "$TOKEN" | md5sum > /secret-env
RUN --mount=type=bind,source=tools,target=/tools --mount=type=ssh {ssh_add} > /ssh-keys
"""
    context = rootless.write_context("ctx", dockerfile, {"data/file": "from-context\n"})
    secrets = ["--secret", f"id=token,src={secret}"]
    for round_ in ("1", "2"):
        rootfs = rootless.home / f"rootfs-{round_}"
        rootless.ok("build", "--isolation", isolation, "--build-arg", f"ROUND={round_}", *secrets, "--ssh", "default",
                    "-o", f"type=local,dest={rootfs}", str(context), env={"SSH_AUTH_SOCK": str(sock)})
    assert (rootfs / "bind-context").read_text() == "from-context\n"
    assert (rootfs / "bind-stage").read_text() == "staged\n"
    # The cache mount kept the first build's line, with the owner and mode asked.
    assert (rootfs / "cache-rounds").read_text() == "1\n2\n"
    assert (rootfs / "cache-owner").read_text() == "1000 1001 750\n"
    assert (rootfs / "tmpfs-seen").read_text() == "in-tmpfs\n"
    assert not (rootfs / "scratch" / "f").exists()
    assert (rootfs / "secret-size").read_text().strip() == str(len("s3cr3t-rootless"))
    assert (rootfs / "secret-env").read_text().split()[0] == hashlib.md5(b"s3cr3t-rootless\n").hexdigest()
    assert key_comment in (rootfs / "ssh-keys").read_text()
    assert not (rootfs / "run" / "secrets" / "token").exists()
    leaked = [str(path) for path in rootless.root.rglob("*")
              if path.is_file() and not path.is_symlink() and b"s3cr3t-rootless" in path.read_bytes()]
    assert leaked == []
