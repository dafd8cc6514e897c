"""Red team, issue 17 (several platforms, emulation): attacks through the
CLI on what a multi-platform build promises. An xfail(strict) test is an
attack that works today (its reason is the diagnosis); a plain test is an
attack that fails as it should, kept as a regression test.

Bases are the busybox_index fixture's (amd64 + arm64, the arm64 RUN steps
through qemu) or indexes crafted by redteam_mp_images.py, whose images
carry only /which so that no step has to run to tell which manifest was
taken for which platform."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from e2e.test_emulation import emulator  # noqa: F401 (a fixture)
from fixtures.pybuild import pybuild_env
from security.redteam_mp_images import Entry, push_index

pytestmark = pytest.mark.e2e

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}


def pybuild(*args: str, tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=timeout,
                          env=pybuild_env(tmp_path))


def _context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (context / name).write_text(text)
    return context


def _one_error(done: subprocess.CompletedProcess) -> str:
    """The build failed as bad input must: exit 1, one ERROR line, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def _root_is_clean(root: Path) -> None:
    """No mount under the root, no scratch directory left in it."""
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]
    assert not mounts, mounts
    scratch = root / "tmp"
    assert not scratch.exists() or not any(scratch.iterdir()), list(scratch.iterdir())


# --- the output directories of type=local and type=tar ----------------------


@pytest.mark.parametrize("platform", [
    "linux/../../escaped", "../../etc/amd64", "linux/amd64/../..", "linux/amd64,linux/a/b/c",
    "linux//amd64", "linux/amd64/v7/x", "linux/am d64", "linux/amd64,", "linux/.", "linux/amd64,linux/..",
])
def test_crafted_platform_strings_are_refused(tmp_path, platform):
    context = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    dest = tmp_path / "out" / "dest"
    done = pybuild("build", "--platform", platform, "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={dest}", str(context), tmp_path=tmp_path)
    assert "invalid platform" in _one_error(done)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


COLLIDING = "FROM scratch\nARG TARGETARCH\nARG TARGETVARIANT\nCOPY ${TARGETARCH}${TARGETVARIANT}.txt /which\n"


@pytest.mark.xfail(strict=True, reason=(
    "builder/export/multi.py platform_dir() maps `linux/arm/v7` and `linux/arm_v7` (an architecture "
    "containerd's syntax allows) to the same `linux_arm_v7`: _write_files exports the second platform's "
    "rootfs over the first's (type=local keeps one platform's files, type=tar holds each path twice); "
    "nothing refuses two platforms whose directory names coincide"))
@pytest.mark.parametrize("output", ["local", "tar"])
def test_platform_directories_never_overwrite_each_other(tmp_path, output):
    """Two distinct platforms, one directory name: the build must either
    refuse them (one error, nothing written) or keep both platforms' files."""
    context = _context(tmp_path, COLLIDING, {"armv7.txt": "arm/v7\n", "arm_v7.txt": "arm_v7\n"})
    dest = tmp_path / ("out" if output == "local" else "out.tar")
    done = pybuild("build", "--platform", "linux/arm/v7,linux/arm_v7", "--root", str(tmp_path / "root"),
                   "-o", f"type={output},dest={dest}", str(context), tmp_path=tmp_path)
    if done.returncode != 0:
        _one_error(done)
        assert not dest.exists()
        return
    if output == "local":
        found = sorted((path.parent.name, path.read_text()) for path in dest.glob("*/which"))
    else:
        import tarfile

        with tarfile.open(dest) as tar:
            found = sorted((member.name.split("/")[0], tar.extractfile(member).read().decode())
                           for member in tar if member.name.endswith("/which"))
    assert len({name for name, _ in found}) == len(found) == 2, found
    assert sorted(text for _, text in found) == ["arm/v7\n", "arm_v7\n"], found


# --- which base manifest each platform takes ---------------------------------


def _which(tmp_path: Path, ref: str, platforms: str, name: str = "which") -> subprocess.CompletedProcess:
    context = _context(tmp_path, f"FROM {ref}\n")
    return pybuild("build", "--platform", platforms, "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={tmp_path / name}", str(context), tmp_path=tmp_path)


def _taken(out: Path) -> dict[str, str]:
    """Platform directory -> the marker of the manifest it was built from."""
    return {path.parent.name: path.read_text().strip() for path in sorted(out.glob("*/which"))}


@pytest.mark.xfail(strict=True, reason=(
    "builder/registry/client.py _resolve_at trusts the index entry's platform: the config of the manifest "
    "it selects is fetched and schema-checked but its os/architecture are never compared with the platform "
    "asked for, so an entry that says arm64 over an amd64 image is built on as linux/arm64 (the frontend's "
    "set_platform then rewrites the config to arm64, hiding it)"))
def test_an_entry_whose_config_says_another_architecture_is_refused(registry, tmp_path):
    ref = push_index(registry, tmp_path / "liar", [
        Entry("amd64", AMD64, config_arch="amd64"),
        Entry("amd64-dressed-as-arm64", ARM64, config_arch="amd64"),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm64")
    assert done.returncode != 0, _taken(tmp_path / "which")
    assert "arm64" in _one_error(done)
    assert not (tmp_path / "which").exists()
    _root_is_clean(tmp_path / "root")


def test_duplicate_entries_take_the_first_of_the_platform(registry, tmp_path):
    """containerd sorts the matches stably and takes the first: so does pybuild."""
    ref = push_index(registry, tmp_path / "dups", [
        Entry("amd64-first", AMD64), Entry("arm64-first", ARM64, config_arch="arm64"),
        Entry("amd64-second", AMD64), Entry("arm64-second", ARM64, config_arch="arm64"),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm64")
    assert done.returncode == 0, done.stderr
    assert _taken(tmp_path / "which") == {"linux_amd64": "amd64-first", "linux_arm64": "arm64-first"}


def test_arm_variants_are_told_apart(registry, tmp_path):
    """v6 listed before v7: each variant asked for gets its own entry,
    `linux/arm` (v7, as containerd normalises it) v7's, arm64 its own."""
    ref = push_index(registry, tmp_path / "variants", [
        Entry("v6", {"os": "linux", "architecture": "arm", "variant": "v6"}, config_arch="arm"),
        Entry("v7", {"os": "linux", "architecture": "arm", "variant": "v7"}, config_arch="arm"),
        Entry("arm64", {**ARM64, "variant": "v8"}, config_arch="arm64"),
    ])
    done = _which(tmp_path, ref, "linux/arm/v7,linux/arm/v6,linux/arm64")
    assert done.returncode == 0, done.stderr
    assert _taken(tmp_path / "which") == {"linux_arm_v6": "v6", "linux_arm_v7": "v7", "linux_arm64": "arm64"}
    done = _which(tmp_path, ref, "linux/arm,linux/arm64/v8", "again")
    assert done.returncode == 0, done.stderr
    assert _taken(tmp_path / "again") == {"linux_arm_v7": "v7", "linux_arm64": "arm64"}


def test_a_variant_missing_from_the_index_is_not_replaced_by_another(registry, tmp_path):
    ref = push_index(registry, tmp_path / "v7only", [
        Entry("v7", {"os": "linux", "architecture": "arm", "variant": "v7"}, config_arch="arm"),
        Entry("amd64", AMD64),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm/v5")
    assert "linux/arm/v5" in _one_error(done)
    assert not (tmp_path / "which").exists()
    _root_is_clean(tmp_path / "root")


ATTESTATION = {"vnd.docker.reference.type": "attestation-manifest"}


def test_attestation_entries_are_never_taken(registry, tmp_path):
    """BuildKit's attestation manifests (unknown/unknown) listed first, and
    an entry with no platform at all: neither serves a platform."""
    ref = push_index(registry, tmp_path / "attested", [
        Entry("attestation", {"os": "unknown", "architecture": "unknown"}, annotations=ATTESTATION),
        Entry("no-platform", None),
        Entry("amd64", AMD64), Entry("arm64", ARM64, config_arch="arm64"),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm64")
    assert done.returncode == 0, done.stderr
    assert _taken(tmp_path / "which") == {"linux_amd64": "amd64", "linux_arm64": "arm64"}


def test_a_platform_missing_from_the_base_is_one_error_and_writes_nothing(registry, tmp_path):
    ref = push_index(registry, tmp_path / "amd64only", [Entry("amd64", AMD64)])
    context = _context(tmp_path, f"FROM {ref}\n")
    root, out = tmp_path / "root", tmp_path / "out"
    tag = f"{registry.host}/redteam-mp-missing:1"
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--root", str(root), "-t", tag, "--push",
                   "-o", f"type=local,dest={out / 'local'}", "-o", f"type=oci,dest={out / 'layout.tar'}",
                   "-o", f"type=tar,dest={out / 'files.tar'}", "-o", "type=image", str(context), tmp_path=tmp_path)
    assert "linux/arm64" in _one_error(done)
    assert not out.exists()
    listed = pybuild("images", "--root", str(root), tmp_path=tmp_path)
    assert listed.returncode == 0 and "redteam-mp-missing" not in listed.stdout, listed.stdout
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{tag}"],
                               capture_output=True, text=True, timeout=60)
    assert inspected.returncode != 0, inspected.stdout
    _root_is_clean(root)


# --- an emulated RUN and the host ---------------------------------------------

# Under binfmt_misc, an emulated process's executable (/proc/PID/exe) is the
# host's qemu interpreter (F flag: the file the kernel opened at registration),
# not a file of the image. A step reaching it through a sibling's
# /proc/PID/exe reaches a file outside the root: chmod to its own mode is
# the harmless probe (the change shows in its ctime).
PROBE = """\
FROM {base}
RUN sleep 20 & pid=$!; sleep 2; \\
    readlink /proc/$pid/exe > /exe-link; \\
    chmod 755 /proc/$pid/exe 2>/chmod-error && echo changed > /chmod; \\
    kill $pid; true
"""


@pytest.mark.xfail(strict=True, reason=(
    "an emulated process's /proc/PID/exe is the host's qemu interpreter (the file binfmt_misc's F flag "
    "opened at registration: runtime/binfmt.py registration_for names /usr/libexec/qemu-binfmt/*-binfmt-P, "
    "i.e. /usr/bin/qemu-*-static), and the step runs as the host's root with docker's default capabilities "
    "(CAP_FOWNER, CAP_CHOWN, CAP_FSETID) in no user namespace (runtime/sandbox.py, the oci spec): a sibling's "
    "`chmod 4755 /proc/PID/exe` makes the host's qemu setuid root; the file is on a writable host mount"))
@pytest.mark.parametrize("isolation", ["builtin", "oci"])
def test_an_emulated_step_cannot_touch_the_hosts_interpreter(emulator, busybox_index, tmp_path, isolation):
    from runtime import binfmt

    interpreter = next(h.interpreter for h in binfmt.handlers() if h.enabled and h.arch == emulator)
    before = os.stat(interpreter)
    context = _context(tmp_path, PROBE.format(base=busybox_index.ref))
    out = tmp_path / "out"
    done = pybuild("build", "--platform", "linux/arm64", "--isolation", isolation, "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={out}", str(context), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    after = os.stat(interpreter)
    seen = {name: (out / name).read_text() for name in ("exe-link", "chmod", "chmod-error") if (out / name).exists()}
    assert (after.st_mode, after.st_uid, after.st_ctime_ns) == (before.st_mode, before.st_uid, before.st_ctime_ns), seen
    assert "chmod" not in seen, seen
