"""Leases (runtime/lease.py): a process's flock tells whether what it made
is in use, whatever way it died; and what another user plants on /dev/shm
is never taken for pybuild's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from runtime.executor import remove_stale_scratch
from runtime.fsutil import remove_tree
from runtime.lease import Leases

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _holder(directory: Path, gated: bool = False) -> subprocess.Popen:
    """A process that takes a lease in `directory`, prints its token, sleeps."""
    code = ("import sys, time; from runtime.lease import Leases; "
            f"print(Leases(sys.argv[1], gated={gated}).hold(), flush=True); time.sleep(60)")
    return subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)


def test_a_lease_is_held_while_its_process_lives_and_free_once_it_is_killed(tmp_path):
    leases = Leases(tmp_path / "leases")
    holder = _holder(tmp_path / "leases")
    try:
        owner = holder.stdout.readline().strip()
        assert owner.startswith(f"{holder.pid}_")
        assert leases.alive(owner) and leases.dead() == [] and leases.others_alive()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert not leases.alive(owner) and leases.dead() == [owner] and not leases.others_alive()
    leases.drop(owner)
    assert os.listdir(tmp_path / "leases") == []
    assert not leases.alive(owner), "a missing lease file is a dead owner"


def test_holds_are_counted_and_the_last_release_removes_the_file(tmp_path):
    leases = Leases(tmp_path / "leases")
    owner = leases.hold()
    leases.hold()
    leases.release()
    assert os.listdir(tmp_path / "leases") == [owner] and leases.holders_here() == 1
    leases.release()
    assert os.listdir(tmp_path / "leases") == [] and leases.holders_here() == 0


def test_a_lease_file_of_another_user_keeps_nothing_alive(tmp_path):
    """Planted to keep pybuild's leftovers (a step's secrets) from being
    removed, even locked by a live process, it counts as no lease."""
    leases = Leases(tmp_path / "leases")
    holder = _holder(tmp_path / "leases")
    try:
        owner = holder.stdout.readline().strip()
        os.chown(tmp_path / "leases" / owner, NOBODY, NOBODY)
        assert not leases.alive(owner)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()


def test_no_lease_is_made_while_the_gate_is_held(tmp_path):
    leases = Leases(tmp_path / "leases", gated=True)
    with leases.gate():
        holder = _holder(tmp_path / "leases", gated=True)
        try:
            time.sleep(1.0)
            assert os.listdir(tmp_path / "leases") == [], "the newcomer waits at the gate"
        except BaseException:
            holder.kill()
            raise
    try:
        owner = holder.stdout.readline().strip()
        assert leases.alive(owner)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()


def _planted_bundle(tmp_path: Path, uid: int, owner: str) -> tuple[Path, Path]:
    """An OCI bundle of a dead `owner` on /dev/shm whose runtime (named by
    its record, or found on PATH: runc and crun) leaves a file when run:
    (the bundle, that file)."""
    ran = tmp_path / "runtime-ran"
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("runc", "crun"):
        (tools / name).write_text(f"#!/bin/sh\necho \"$@\" > {ran}\n")
        (tools / name).chmod(0o755)
    bundle = Path("/dev/shm", f"pybuild-oci-{owner}-planted")
    bundle.mkdir(mode=0o700)
    (bundle / "state" / "victim").mkdir(parents=True)
    (bundle / "container").write_text(f"{tools / 'runc'}\nvictim\n")
    for path in (bundle, bundle / "state", bundle / "state" / "victim", bundle / "container"):
        os.chown(path, uid, uid)
    return bundle, ran


def _dead_owners() -> list[str]:
    """A token without a lease, and a pid no process has (the names of a
    pybuild from before leases)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return [f"1_{uuid.uuid4().hex[:8]}", str(process.pid)]


@pytest.mark.parametrize("owner", _dead_owners())
def test_a_bundle_planted_by_another_user_never_runs_the_runtime(tmp_path, monkeypatch, owner):
    bundle, ran = _planted_bundle(tmp_path, NOBODY, owner)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    try:
        remove_stale_scratch()
        assert not ran.exists(), "the runtime ran on another user's state"
        assert bundle.is_dir(), "another user's directory is left alone"
    finally:
        remove_tree(bundle)


def test_a_dead_owners_bundle_has_its_container_deleted_and_goes(tmp_path):
    bundle, ran = _planted_bundle(tmp_path, os.geteuid(), f"1_{uuid.uuid4().hex[:8]}")
    try:
        remove_stale_scratch()
        assert ran.read_text().split() == ["--root", str(bundle / "state"), "delete", "--force", "victim"]
        assert not bundle.exists()
    finally:
        remove_tree(bundle)


def test_one_leftover_that_cannot_be_taken_back_keeps_none_of_the_others(tmp_path, monkeypatch):
    """reclaim takes back each kind of leftover on its own: a failing step
    (here the /dev/shm scratch sweep) used to abort every later one, so a
    dead build's merged view and ROOT/tmp stayed for good."""
    from builder.root import reclaim as reclaim_module
    from builder.root.worker import Worker

    root = tmp_path / "root"
    Worker.open(root, "builtin").close()
    holder = _holder(root / "snapshots" / ".leases", gated=True)
    try:
        owner = holder.stdout.readline().strip()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    view = root / "snapshots" / f".mnt-{owner}-abcdefgh"
    view.mkdir()
    (root / "tmp" / "left-by-the-dead").write_text("x")

    def refuse():
        raise PermissionError(1, "Operation not permitted", "/dev/shm/pybuild-exec-someone-elses")

    monkeypatch.setattr(reclaim_module, "remove_stale_scratch", refuse)
    Worker.open(root, "builtin").close()
    assert not view.exists()
    assert not (root / "tmp" / "left-by-the-dead").exists()
    assert Leases(root / "snapshots" / ".leases", gated=True).dead() == []


def test_scratch_in_the_temp_dir_of_a_killed_pybuild_is_reclaimed(tmp_path, monkeypatch):
    """Without a usable /dev/shm (a container may have none) step scratch
    goes to the temp dir: it carries a lease token there too, so what a
    pybuild killed by SIGKILL left is taken back by the next one."""
    from runtime import executor

    temp = tmp_path / "tmp"
    temp.mkdir()
    code = ("import sys, time\nfrom pathlib import Path\nfrom runtime import executor\n"
            "executor._MEMORY_BACKED = Path('/nonexistent-shm')\n"
            "print(executor.scratch_dir(None, 'pybuild-git-'), flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "TMPDIR": str(temp)})
    try:
        scratch = Path(holder.stdout.readline().strip())
        assert scratch.parent == temp and scratch.is_dir()
        monkeypatch.setattr(executor, "_MEMORY_BACKED", Path("/nonexistent-shm"))
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        assert executor.remove_stale_scratch() == 0 and scratch.is_dir(), "its maker still lives"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert executor.remove_stale_scratch() == 1
    assert os.listdir(temp) == []  # the scratch and the dead lease
