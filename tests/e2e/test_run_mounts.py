"""Issue #4, end to end: every `RUN --mount` type, checked from inside the
build and against the image produced, with both executors."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from e2e.helpers import ISOLATIONS, BUILD_ERRORS, build_image
from fixtures.tools import require_tools

pytestmark = pytest.mark.e2e



@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_bind_and_tmpfs_mounts(tmp_path, root, busybox_image, isolation):
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref} AS src
RUN mkdir -p /stage/sub && echo from-stage > /stage/sub/file

FROM {busybox_image.ref}
ARG ISOLATION
RUN --mount=type=bind,from=src,source=/stage/sub,target=/mnt/s \\
    [ "$(cat /mnt/s/file)" = from-stage ] && ! touch /mnt/s/new 2>/dev/null
RUN --mount=type=bind,from={busybox_image.ref},source=/etc,target=/img grep -q '^app:' /img/passwd
RUN --mount=type=bind,target=/ctx \\
    [ "$(cat /ctx/input.txt)" = input ] && [ "$(cat /ctx/dir/f)" = f ] && ! touch /ctx/x 2>/dev/null
RUN --mount=type=bind,source=dir,target=/d [ "$(cat /d/f)" = f ]
RUN --mount=type=bind,source=input.txt,target=/one-file [ "$(cat /one-file)" = input ]
RUN --mount=type=bind,from=src,source=/stage,target=/w,rw \\
    echo changed > /w/sub/file && echo new > /w/new && [ "$(cat /w/sub/file)" = changed ]
RUN --mount=type=bind,from=src,source=/stage,target=/w [ "$(cat /w/sub/file)" = from-stage ] && [ ! -e /w/new ]
RUN --mount=type=bind,target=/ctx,rw echo scribbled > /ctx/input.txt && echo x > /ctx/created
RUN --mount=type=bind,target=/ctx [ "$(cat /ctx/input.txt)" = input ] && [ ! -e /ctx/created ]
RUN --mount=type=tmpfs,target=/t,size=1m set -e; \\
    grep -q ' /t tmpfs .*size=1024k' /proc/mounts; echo scratch > /t/f; \\
    ! dd if=/dev/zero of=/t/big bs=1k count=2048 2>/dev/null
RUN --mount=type=tmpfs,target=/var/t2 [ -z "$(ls -A /var/t2)" ] && echo "$ISOLATION" > /done
""", files={"input.txt": "input\n", "dir/f": "f\n"}, build_args={"ISOLATION": isolation}, isolation=isolation)
    assert built.read_text("/done") == isolation + "\n"
    assert (built.context / "input.txt").read_text() == "input\n"  # rw writes never reach the context
    assert not (built.context / "created").exists()
    # Mount points made for the steps do not stay in the image.
    for path in ("/mnt/s", "/img", "/ctx", "/d", "/one-file", "/w", "/t", "/var/t2"):
        assert not built.exists(path), path


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_cache_mounts(tmp_path, root, busybox_image, isolation):
    dockerfile = f"""\
FROM {busybox_image.ref} AS seed
RUN mkdir -p /seed/dir && echo seeded > /seed/dir/file

FROM {busybox_image.ref}
ARG RUN_ID
RUN --mount=type=cache,target=/cache,id=counter-{isolation} \\
    echo "$RUN_ID" >> /cache/runs && wc -l < /cache/runs | tr -d ' ' > /count
RUN --mount=type=cache,target=/var/cache/shared,sharing=shared \
    --mount=type=cache,target=/private,sharing=private,id=priv-{isolation} \
    touch /var/cache/shared/x /private/y
RUN --mount=type=cache,target=/owned,id=owned-{isolation},uid=1000,gid=1000,mode=0750 \\
    [ "$(stat -c %u:%g:%a /owned)" = 1000:1000:750 ]
USER app
RUN --mount=type=cache,target=/home/app/.cache,id=app-{isolation},uid=1000 touch /home/app/.cache/ok
USER root
RUN --mount=type=cache,target=/seeded,id=seeded-{isolation},from=seed,source=/seed \\
    [ "$(cat /seeded/dir/file)" = seeded ] && echo "$RUN_ID" >> /seeded/runs && cp /seeded/runs /seeded-runs
"""
    first = build_image(tmp_path, root, dockerfile,
                        build_args={"RUN_ID": "one"}, isolation=isolation)
    assert first.read_text("/count") == "1\n"
    assert first.read_text("/seeded-runs") == "one\n"
    assert not first.exists("/cache") and not first.exists("/owned") and not first.exists("/seeded")
    # The cache directories persist in the root, across builds.
    second = build_image(tmp_path, root, dockerfile,
                         build_args={"RUN_ID": "two"}, isolation=isolation)
    assert second.read_text("/count") == "2\n"
    assert second.read_text("/seeded-runs") == "one\ntwo\n"  # seeded once, then kept


def test_cache_mount_locked_serialises_two_processes(tmp_path, root, busybox_image):
    """Two pybuild processes, one cache id with sharing=locked: the two
    steps never overlap. A shared-cache step just before shows that the two
    builds do run at the same time."""
    script = """\
RUN --mount=type=cache,target=/c,id=timeline,sharing={sharing} \\
    echo "$WHO {sharing} start $(cut -d' ' -f1 /proc/uptime)" >> /c/times; sleep 1.5; \\
    echo "$WHO {sharing} end $(cut -d' ' -f1 /proc/uptime)" >> /c/times
"""
    dockerfile = (f"FROM {busybox_image.ref}\nARG WHO\n" + script.format(sharing="shared")
                  + script.format(sharing="locked").replace("timeline", "timeline-locked"))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    # Pull and extract the base first, so both builds start their RUNs together.
    build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN true\n", export=False, local=False)
    procs = [subprocess.Popen([sys.executable, "-c", "from builder.cli import main; main()", "--root", str(root),
                               "--isolation", "builtin", "--progress", "quiet", "--build-arg", f"WHO={who}",
                               str(context)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN --mount=type=cache,target=/c,id=timeline cp /c/times /shared-times
RUN --mount=type=cache,target=/c,id=timeline-locked cp /c/times /locked-times
""", export=False, no_cache=True)

    def spans(text):
        times = {}
        for line in text.splitlines():
            who, _, edge, at = line.split()
            times.setdefault(who, {})[edge] = float(at)
        return times["a"], times["b"]

    a, b = spans(built.read_text("/shared-times"))
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two builds did not run concurrently"
    a, b = spans(built.read_text("/locked-times"))
    assert a["end"] <= b["start"] or b["end"] <= a["start"], f"locked steps overlapped: {a} {b}"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_secret_mounts(tmp_path, root, busybox_image, isolation, monkeypatch):
    # The Dockerfile compares md5 sums, so that the values appear nowhere
    # but in the secrets themselves (history records each RUN's text).
    file_value, env_value = "s3cr3t-file-value", "s3cr3t-env-value"
    file_md5, env_md5 = (hashlib.md5(v.encode()).hexdigest() for v in (file_value, env_value))
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(file_value)
    monkeypatch.setenv("PB_E2E_SECRET", env_value)
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN --mount=type=secret,id=tok set -e; [ "$(md5sum < /run/secrets/tok | cut -d' ' -f1)" = {file_md5} ]; \\
    [ "$(stat -c %a:%u:%g /run/secrets/tok)" = 400:0:0 ]; ! echo x > /run/secrets/tok 2>/dev/null
RUN --mount=type=secret,id=tok,target=/opt/token,mode=0440,uid=1000,gid=1000 \\
    [ "$(stat -c %a:%u:%g /opt/token)" = 440:1000:1000 ] && [ ! -e /run/secrets/tok ]
USER app
RUN --mount=type=secret,id=tok,uid=1000 [ "$(md5sum < /run/secrets/tok | cut -d' ' -f1)" = {file_md5} ]
USER root
RUN --mount=type=secret,id=envsecret,env=MY_SECRET \\
    [ "$(printf %s "$MY_SECRET" | md5sum | cut -d' ' -f1)" = {env_md5} ] && [ ! -e /run/secrets/envsecret ]
RUN --mount=type=secret,id=tok,env=BOTH,target=/both \\
    [ "$(printf %s "$BOTH" | md5sum | cut -d' ' -f1)" = {file_md5} ] && [ -f /both ]
RUN --mount=type=secret,id=absent [ ! -e /run/secrets/absent ] && echo ok > /done
RUN [ -z "$MY_SECRET" ] && [ ! -e /run/secrets/tok ]
""", secrets=[f"id=tok,src={secret_file}", "id=envsecret,env=PB_E2E_SECRET"], isolation=isolation)
    assert built.read_text("/done") == "ok\n"
    assert not built.exists("/opt/token") and not built.exists("/both") and not built.exists("/run/secrets/tok")
    # The values are in no layer, no config, no history.
    blobs = list((built.layout / "blobs" / "sha256").iterdir())
    for blob in blobs:
        data = blob.read_bytes()
        if data[:2] == b"\x1f\x8b":
            with tarfile.open(blob) as tar:
                data = b"".join(tar.extractfile(m).read() for m in tar if m.isfile())
        assert b"s3cr3t" not in data, blob.name

    with pytest.raises(BUILD_ERRORS, match="secret absent"):
        build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN --mount=type=secret,id=absent,required true\n",
                    isolation=isolation, export=False, local=False)


def _ssh_add_bundle(dest):
    """ssh-add and the host libraries it needs, to run it inside busybox
    through the host's dynamic loader (busybox has no ssh client)."""
    ssh_add = shutil.which("ssh-add")
    dest.mkdir()
    shutil.copy2(ssh_add, dest / "ssh-add")
    loader = None
    for line in subprocess.run(["ldd", ssh_add], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            shutil.copy2(path, dest / path.rsplit("/", 1)[1])
            if "ld-linux" in path:
                loader = path.rsplit("/", 1)[1]
    return loader


@pytest.fixture
def ssh_agent(tmp_path):
    """A real ssh-agent (foreground, so that it is ours to stop) holding one
    new ed25519 key: yields (socket, public key text)."""
    require_tools("ssh-agent", "ssh-keygen", "ssh-add")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-forwarded", "-f", str(key)], check=True)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        subprocess.run(["ssh-add", "-q", str(key)], env={"SSH_AUTH_SOCK": str(sock)}, check=True)
        yield sock, key
    finally:
        agent.terminate()
        agent.wait()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_ssh_mounts(tmp_path, root, busybox_image, isolation, ssh_agent, monkeypatch):
    sock, forwarded_key = ssh_agent
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    bundle = tmp_path / "bundle"
    loader = _ssh_add_bundle(bundle)
    key_file = tmp_path / "deploy_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-keyfile", "-f", str(key_file)],
                   check=True)
    key_file.chmod(0o644)  # too open for ssh-add on a file; fine for pybuild (stdin)
    ssh_add = f"/tools/{loader} --library-path /tools /tools/ssh-add -l"
    context = {f"tools/{p.name}": p for p in bundle.iterdir()}
    built = build_image(tmp_path, root, f"""\
FROM {busybox_image.ref}
RUN --mount=type=ssh [ "$SSH_AUTH_SOCK" = /run/buildkit/ssh_agent.0 ] && test -S "$SSH_AUTH_SOCK"
RUN --mount=type=bind,source=tools,target=/tools --mount=type=ssh \\
    {ssh_add} > /default-keys
RUN --mount=type=bind,source=tools,target=/tools --mount=type=ssh,id=deploy,target=/run/deploy.sock \\
    [ "$SSH_AUTH_SOCK" = /run/deploy.sock ] && {ssh_add} > /deploy-keys
RUN --mount=type=ssh,id=unknown [ "$SSH_AUTH_SOCK" = /run/buildkit/ssh_agent.0 ] && [ ! -e "$SSH_AUTH_SOCK" ] && echo ok > /done
RUN --mount=type=ssh,uid=1000,gid=1001,mode=0640 stat -c '%u %g %a' "$SSH_AUTH_SOCK" > /sock-owner
USER 1000
RUN --mount=type=bind,source=tools,target=/tools --mount=type=ssh,uid=1000 {ssh_add} > /tmp/user-keys
""", files=context, ssh=["default", f"deploy={key_file}"], isolation=isolation)
    assert "e2e-forwarded" in built.read_text("/default-keys")
    deploy = built.read_text("/deploy-keys")
    assert "e2e-keyfile" in deploy and "e2e-forwarded" not in deploy
    assert built.read_text("/done") == "ok\n"
    # BuildKit's mount options: the step's socket has the owner and mode asked for,
    # so a step running as that user reaches the agent.
    assert built.read_text("/sock-owner") == "1000 1001 640\n"
    assert "e2e-forwarded" in built.read_text("/tmp/user-keys")
    assert not built.exists("/run/buildkit") and not built.exists("/run/deploy.sock")

    with pytest.raises(BUILD_ERRORS, match="unknown"):
        build_image(tmp_path, root, f"FROM {busybox_image.ref}\nRUN --mount=type=ssh,id=unknown,required true\n",
                    isolation=isolation, export=False, local=False)
