"""A replay does every check a full build does, and the memo's bookkeeping
never fails a build that succeeded (builder.root.memo)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from builder.root.lock import RootLock
from builder.root.memo import NO_MEMO_ENV
from cli_helpers import PYBUILD, Cli, write_context

DOCKERFILE = "FROM {base}\nCOPY a.txt /a.txt\n"


def settle() -> None:
    """Let the files just written age past the racy window, so that the
    next build may write its memo."""
    time.sleep(0.3)


def memo_files(root) -> list[str]:
    try:
        return sorted(os.listdir(root / "memo"))
    except (FileNotFoundError, NotADirectoryError):
        return []


@pytest.fixture
def context(busybox_image, tmp_path):
    directory = write_context(tmp_path / "ctx", DOCKERFILE.format(base=busybox_image.ref), {"a.txt": "a\n"})
    settle()
    return directory


@pytest.fixture
def own(cli, tmp_path) -> Cli:
    """A root of this test's own."""
    return Cli(tmp_path / "root", cli.env)


def own_command(cli: Cli) -> list[str]:
    return [*PYBUILD, "--root", str(cli.root)]


def memoised(cli: Cli, *args: str, env: dict | None = None) -> str:
    """Build until the memo answers; the image ID."""
    first = cli.build("-q", *args, env=env)
    assert first.returncode == 0, first.stderr.decode()
    assert memo_files(cli.root), "the build wrote its memo"
    return first.stdout.decode().strip()


# -- bookkeeping ----------------------------------------------------------------------

def test_a_memo_directory_that_is_a_file_fails_nothing(own, context):
    own.root.mkdir()
    (own.root / "memo").write_text("not a directory\n")
    done = own.build("-q", "--debug", str(context))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("sha256:")
    assert "Traceback" not in done.stderr.decode()
    assert "no-op memo not written" in done.stderr.decode()  # --debug: a note, nothing more
    assert (own.root / "memo").read_text() == "not a directory\n"
    again = own.build("-q", str(context))
    assert again.returncode == 0 and again.stderr == b"" and again.stdout == done.stdout


def test_a_full_memo_filesystem_fails_nothing_and_leaves_nothing(own, context):
    memos = own.root / "memo"
    memos.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(memos)], check=True)
    try:
        with open(memos / "filler", "wb") as filler:
            try:
                filler.write(b"x" * 65536)
                filler.flush()
            except OSError:
                pass  # ENOSPC: full
        done = own.build("-q", str(context))
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b"" and done.stdout.decode().startswith("sha256:")
        assert os.listdir(memos) == ["filler"]  # no half-written memo left behind
    finally:
        subprocess.run(["umount", str(memos)], check=True)


def test_a_working_directory_removed_during_the_build_fails_nothing(own, busybox_image, tmp_path):
    context = write_context(tmp_path / "slow", f"FROM {busybox_image.ref}\nARG TOKEN\nRUN sleep 2\n")
    workdir = tmp_path / "wd"
    workdir.mkdir()
    process = subprocess.Popen([*own_command(own), "-q", "--build-arg", f"TOKEN={time.time_ns()}", str(context)],
                               cwd=workdir, env=own.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.2)  # the RUN is under way
        workdir.rmdir()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("sha256:") and err == b""


# -- the checks of a full build ---------------------------------------------------------

def test_a_missing_secret_source_fails_the_replay_as_the_build(cli, context, tmp_path):
    secret = tmp_path / "token.txt"
    secret.write_text("s3cret\n")
    args = ("--secret", f"id=token,src={secret}", str(context))
    memoised(cli, *args)
    secret.unlink()
    replay = cli.build("-q", *args)
    full = cli.build("-q", *args, env={NO_MEMO_ENV: "1"})
    assert full.returncode == 1 and "secret token: cannot read" in full.stderr.decode()
    assert (replay.returncode, replay.stdout, replay.stderr) == (full.returncode, full.stdout, full.stderr)


def test_ssh_without_an_agent_fails_the_replay_as_the_build(cli, context, tmp_path):
    path = tmp_path / "agent.sock"
    agent = socket.socket(socket.AF_UNIX)
    try:
        agent.bind(str(path))
        memoised(cli, "--ssh", "default", str(context), env={"SSH_AUTH_SOCK": str(path)})
        env = {key: value for key, value in cli.env.items() if key != "SSH_AUTH_SOCK"}
        replay = subprocess.run([*own_command(cli), "-q", "--ssh", "default", str(context)], env=env,
                                capture_output=True, timeout=120)
        full = subprocess.run([*own_command(cli), "-q", "--ssh", "default", str(context)],
                              env={**env, NO_MEMO_ENV: "1"}, capture_output=True, timeout=120)
    finally:
        agent.close()
    assert full.returncode == 1 and "SSH_AUTH_SOCK is not set" in full.stderr.decode()
    assert (replay.returncode, replay.stdout, replay.stderr) == (full.returncode, full.stdout, full.stderr)


def test_a_replay_waits_for_prune_as_a_build_does(own, context):
    """prune holds the root's lock exclusively; an answer given meanwhile
    could vouch for a cache record prune is removing."""
    image = memoised(own, str(context))
    with RootLock(own.root, exclusive=True):
        process = subprocess.Popen([*own_command(own), "-q", str(context)], env=own.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        try:
            time.sleep(1.5)
            waiting = process.poll() is None
        except BaseException:
            process.kill()
            raise
    out, err = process.communicate(timeout=120)
    assert waiting, "the replay did not wait for the root's lock"
    assert process.returncode == 0 and out.decode().strip() == image, err.decode()


def test_a_replay_runs_automatic_gc_when_a_build_would(own, context, busybox_image, tmp_path):
    config = tmp_path / "gc.toml"
    config.write_text('[[gc.policy]]\nkeep_duration = "1s"\n')
    args = ("--config", str(config), "--progress=plain", str(context))
    settle()
    first = own.build(*args)
    assert first.returncode == 0 and memo_files(own.root), first.stderr.decode()
    # Another build's results, unused from now on: stale after 1 s.
    other = write_context(tmp_path / "other", f"FROM {busybox_image.ref}\nCOPY b.txt /b.txt\n", {"b.txt": "b\n"})
    assert own.build("--config", str(config), "-q", str(other)).returncode == 0
    time.sleep(1.5)
    checked = own.root / "gc.checked"
    past = time.time() - 3600
    os.utime(checked, (past, past))  # the last check was long ago: GC is due
    scratch = (own.root / "tmp").stat().st_mtime_ns
    replay = own.build(*args)
    assert replay.returncode == 0, replay.stderr.decode()
    assert (own.root / "tmp").stat().st_mtime_ns == scratch, "answered from the memo"
    assert "garbage collection: freed" in replay.stderr.decode()
    assert checked.stat().st_mtime > past + 3000
    assert not memo_files(own.root)  # a collection drops the memos, as after a full build


def test_a_secret_value_reaches_no_memo(cli, context):
    """`--secret id=TOKEN` reads $TOKEN: its value must not be under the
    root in any form, not even hashed into a memo's name. A new value
    changes no step (as BuildKit, secrets are not in cache keys), so the
    memo still answers."""
    args = ("--secret", "id=TOKEN", str(context))
    image = memoised(cli, *args, env={"TOKEN": "hunter2-first"})
    names = memo_files(cli.root)
    scratch = (cli.root / "tmp").stat().st_mtime_ns
    again = cli.build("-q", *args, env={"TOKEN": "hunter2-second"})
    assert again.returncode == 0 and again.stdout.decode().strip() == image, again.stderr.decode()
    assert (cli.root / "tmp").stat().st_mtime_ns == scratch, "answered from the memo"
    assert memo_files(cli.root) == names
    for name in names:
        assert "hunter2" not in (cli.root / "memo" / name).read_text()
