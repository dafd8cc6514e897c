"""Red team, issue 17 (several platforms, emulation): attacks through the
CLI on what a multi-platform build promises. An xfail(strict) test is an
attack that works today (its reason is the diagnosis); a plain test is an
attack that fails as it should, kept as a regression test.

Bases are the busybox_index fixture's (amd64 + arm64, the arm64 RUN steps
through qemu) or indexes crafted by redteam_mp_images.py, whose images
carry only /which so that no step has to run to tell which manifest was
taken for which platform."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from e2e.test_emulation import emulator  # noqa: F401 (a fixture)
from fixtures.pybuild import pybuild_env
from security.redteam_mp_checks import (one_error, one_line_error, processes_with, pybuild, reap,
                                          root_is_clean, wait_for, write_context)
from security.redteam_mp_images import Entry, push_index, push_single

pytestmark = pytest.mark.e2e

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}


# --- the output directories of type=local and type=tar ----------------------


@pytest.mark.parametrize("platform", [
    "linux/../../escaped", "../../etc/amd64", "linux/amd64/../..", "linux/amd64,linux/a/b/c",
    "linux//amd64", "linux/amd64/v7/x", "linux/am d64", "linux/amd64,", "linux/.", "linux/amd64,linux/..",
])
def test_crafted_platform_strings_are_refused(tmp_path, platform):
    context = write_context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    dest = tmp_path / "out" / "dest"
    done = pybuild("build", "--platform", platform, "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={dest}", str(context), tmp_path=tmp_path)
    assert "invalid platform" in one_error(done)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


COLLIDING = "FROM scratch\nARG TARGETARCH\nARG TARGETVARIANT\nCOPY ${TARGETARCH}${TARGETVARIANT}.txt /which\n"


@pytest.mark.parametrize("output", ["local", "tar"])
def test_platform_directories_never_overwrite_each_other(tmp_path, output):
    """Two distinct platforms, one directory name: the build must either
    refuse them (one error, nothing written) or keep both platforms' files."""
    context = write_context(tmp_path, COLLIDING, {"armv7.txt": "arm/v7\n", "arm_v7.txt": "arm_v7\n"})
    dest = tmp_path / ("out" if output == "local" else "out.tar")
    done = pybuild("build", "--platform", "linux/arm/v7,linux/arm_v7", "--root", str(tmp_path / "root"),
                   "-o", f"type={output},dest={dest}", str(context), tmp_path=tmp_path)
    if done.returncode != 0:
        one_error(done)
        assert not dest.exists()
        return
    if output == "local":
        found = sorted((path.parent.name, path.read_text()) for path in dest.glob("*/which"))
    else:
        with tarfile.open(dest) as tar:
            found = sorted((member.name.split("/")[0], tar.extractfile(member).read().decode())
                           for member in tar if member.name.endswith("/which"))
    assert len({name for name, _ in found}) == len(found) == 2, found
    assert sorted(text for _, text in found) == ["arm/v7\n", "arm_v7\n"], found



def test_a_platform_directory_planted_as_a_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    hostile = tmp_path / "hostile"
    (hostile / "tree").mkdir(parents=True)
    (hostile / "tree" / "linux_amd64").symlink_to(victim)
    (hostile / "Dockerfile").write_text("FROM scratch\nCOPY tree/ /\n")
    root, dest = tmp_path / "root", tmp_path / "out"
    done = pybuild("build", "--root", str(root), "-o", f"type=local,dest={dest}", str(hostile), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (dest / "linux_amd64").is_symlink()  # what the image holds, exported as it is
    context = write_context(tmp_path, "FROM scratch\nCOPY Dockerfile /written\n")
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--root", str(root),
                   "-o", f"type=local,dest={dest}", str(context), tmp_path=tmp_path)
    assert list(victim.iterdir()) == []
    if done.returncode == 0:
        assert (dest / "linux_amd64" / "written").is_file() and not (dest / "linux_amd64").is_symlink()
    else:
        one_error(done)



def test_a_platform_directory_that_is_a_file_fails_before_anything_is_written(tmp_path):
    """DEST/linux_arm64 is a file: one error, and DEST/linux_amd64 is not
    written first (the second platform's directory is checked late)."""
    context = write_context(tmp_path, "FROM scratch\nCOPY Dockerfile /written\n")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "linux_arm64").write_text("mine\n")
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={dest}", str(context), tmp_path=tmp_path)
    assert "linux_arm64" in one_error(done)
    assert sorted(p.name for p in dest.iterdir()) == ["linux_arm64"]
    assert (dest / "linux_arm64").read_text() == "mine\n"

@pytest.mark.parametrize("platforms", ["linux/amd64,linux/amd64/v1", "linux/arm/v6,linux/arm/6",
                                       "linux/arm64,linux/arm64/v8", "linux/arm/v8,linux/arm/8"])
def test_one_platform_spelled_twice_is_built_once(tmp_path, platforms):
    """containerd normalises the spellings (normalizeArch), buildx then
    dedupes: one platform, one image."""
    context = write_context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    layout = tmp_path / "layout.tar"
    done = pybuild("build", "--platform", platforms, "--root", str(tmp_path / "root"),
                   "-o", f"type=oci,dest={layout}", str(context), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    with tarfile.open(layout) as tar:
        top = json.load(tar.extractfile("index.json"))
        digest = top["manifests"][0]["digest"]
        body = json.load(tar.extractfile("blobs/" + digest.replace(":", "/")))
    # One image, or an index of one (beside its provenance's attestation
    # manifest): never two entries for one platform.
    entries = [m for m in body.get("manifests", [body])
               if m.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest"]
    assert len(entries) == 1, [m.get("platform") for m in entries]



def test_every_platform_failing_is_still_one_error(tmp_path):
    context = write_context(tmp_path, "FROM scratch\nARG TARGETARCH\nCOPY missing-$TARGETARCH /\n")
    dest = tmp_path / "out"
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64,linux/arm/v7,linux/riscv64",
                   "--root", str(tmp_path / "root"), "-o", f"type=local,dest={dest}", str(context), tmp_path=tmp_path)
    assert "missing-" in one_error(done)
    assert not dest.exists()
    root_is_clean(tmp_path / "root")

@pytest.mark.parametrize("docker", ["type=docker", "type=docker,dest=-", "type=docker,name=app"])
def test_docker_output_beside_others_is_refused_before_anything_runs(tmp_path, docker):
    context = write_context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    root, out = tmp_path / "root", tmp_path / "out"
    docker_out = docker if "dest" in docker or "name" in docker else f"{docker},dest={out / 'd.tar'}"
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--root", str(root), "-t", "app",
                   "-o", f"type=local,dest={out / 'local'}", "-o", docker_out, str(context), tmp_path=tmp_path)
    assert "docker exporter does not currently support exporting manifest lists" in one_error(done)
    assert done.stdout == ""
    assert not out.exists()
    listed = pybuild("images", "--root", str(root), tmp_path=tmp_path)
    assert "app" not in listed.stdout, listed.stdout
    root_is_clean(root)

# --- which base manifest each platform takes ---------------------------------


def _which(tmp_path: Path, ref: str, platforms: str, name: str = "which") -> subprocess.CompletedProcess:
    context = write_context(tmp_path, f"FROM {ref}\n")
    return pybuild("build", "--platform", platforms, "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={tmp_path / name}", str(context), tmp_path=tmp_path)


def taken(out: Path) -> dict[str, str]:
    """Platform directory -> the marker of the manifest it was built from."""
    return {path.parent.name: path.read_text().strip() for path in sorted(out.glob("*/which"))}


def test_an_entry_whose_config_says_another_architecture_is_not_taken_silently(registry, tmp_path):
    """An index entry that says arm64 over an amd64 config: BuildKit 0.13
    takes it silently; later BuildKit, and pybuild, warn
    InvalidBaseImagePlatform (docs/architecture.md)."""
    ref = push_index(registry, tmp_path / "liar", [
        Entry("amd64", AMD64, config_arch="amd64"),
        Entry("amd64-dressed-as-arm64", ARM64, config_arch="amd64"),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm64")
    if done.returncode != 0:
        assert "arm64" in one_error(done)
        assert not (tmp_path / "which").exists()
        return
    said = [line for line in done.stderr.splitlines()
            if "InvalidBaseImagePlatform" in line and '"linux/amd64"' in line and '"linux/arm64"' in line]
    assert len(said) == 1, done.stderr



def test_a_single_arch_base_for_another_platform_is_not_taken_silently(registry, tmp_path):
    ref = push_single(registry, tmp_path / "amd64only", "amd64", "amd64")
    done = _which(tmp_path, ref, "linux/amd64,linux/arm64")
    if done.returncode != 0:
        assert "arm64" in one_error(done)
        return
    said = [line for line in done.stderr.splitlines() if "linux/amd64" in line and "linux/arm64" in line]
    assert said, done.stderr


@pytest.mark.parametrize("kind", ["docker-image", "oci-layout"])
def test_a_named_context_image_is_taken_per_platform(registry, tmp_path, kind):
    """`--build-context base=docker-image://REF` or `oci-layout://DIR`: each
    platform's stage gets the index's entry of its own platform."""
    layout = tmp_path / "named"
    ref = push_index(registry, layout, [Entry("arm64", ARM64, config_arch="arm64"), Entry("amd64", AMD64)])
    source = f"docker-image://{ref}" if kind == "docker-image" else f"oci-layout://{layout}:latest"
    context = write_context(tmp_path, "FROM base\n")
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--root", str(tmp_path / "root"),
                   "--build-context", f"base={source}", "-o", f"type=local,dest={tmp_path / 'which'}",
                   str(context), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert taken(tmp_path / "which") == {"linux_amd64": "amd64", "linux_arm64": "arm64"}

def test_duplicate_entries_take_the_first_of_the_platform(registry, tmp_path):
    """containerd sorts the matches stably and takes the first: so does pybuild."""
    ref = push_index(registry, tmp_path / "dups", [
        Entry("amd64-first", AMD64), Entry("arm64-first", ARM64, config_arch="arm64"),
        Entry("amd64-second", AMD64), Entry("arm64-second", ARM64, config_arch="arm64"),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm64")
    assert done.returncode == 0, done.stderr
    assert taken(tmp_path / "which") == {"linux_amd64": "amd64-first", "linux_arm64": "arm64-first"}


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
    assert taken(tmp_path / "which") == {"linux_arm_v6": "v6", "linux_arm_v7": "v7", "linux_arm64": "arm64"}
    done = _which(tmp_path, ref, "linux/arm,linux/arm64/v8", "again")
    assert done.returncode == 0, done.stderr
    assert taken(tmp_path / "again") == {"linux_arm_v7": "v7", "linux_arm64": "arm64"}


def test_a_variant_missing_from_the_index_is_not_replaced_by_another(registry, tmp_path):
    ref = push_index(registry, tmp_path / "v7only", [
        Entry("v7", {"os": "linux", "architecture": "arm", "variant": "v7"}, config_arch="arm"),
        Entry("amd64", AMD64),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm/v5")
    assert "linux/arm/v5" in one_error(done)
    assert not (tmp_path / "which").exists()
    root_is_clean(tmp_path / "root")


ATTESTATION = {"vnd.docker.reference.type": "attestation-manifest"}


def test_attestation_entries_are_nevertaken(registry, tmp_path):
    """BuildKit's attestation manifests (unknown/unknown) listed first, and
    an entry with no platform at all: neither serves a platform."""
    ref = push_index(registry, tmp_path / "attested", [
        Entry("attestation", {"os": "unknown", "architecture": "unknown"}, annotations=ATTESTATION),
        Entry("no-platform", None),
        Entry("amd64", AMD64), Entry("arm64", ARM64, config_arch="arm64"),
    ])
    done = _which(tmp_path, ref, "linux/amd64,linux/arm64")
    assert done.returncode == 0, done.stderr
    assert taken(tmp_path / "which") == {"linux_amd64": "amd64", "linux_arm64": "arm64"}


def test_a_platform_missing_from_the_base_is_one_error_and_writes_nothing(registry, tmp_path):
    ref = push_index(registry, tmp_path / "amd64only", [Entry("amd64", AMD64)])
    context = write_context(tmp_path, f"FROM {ref}\n")
    root, out = tmp_path / "root", tmp_path / "out"
    tag = f"{registry.host}/redteam-mp-missing:1"
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--root", str(root), "-t", tag, "--push",
                   "-o", f"type=local,dest={out / 'local'}", "-o", f"type=oci,dest={out / 'layout.tar'}",
                   "-o", f"type=tar,dest={out / 'files.tar'}", "-o", "type=image", str(context), tmp_path=tmp_path)
    assert "linux/arm64" in one_error(done)
    assert not out.exists()
    listed = pybuild("images", "--root", str(root), tmp_path=tmp_path)
    assert listed.returncode == 0 and "redteam-mp-missing" not in listed.stdout, listed.stdout
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{tag}"],
                               capture_output=True, text=True, timeout=60)
    assert inspected.returncode != 0, inspected.stdout
    root_is_clean(root)



def test_the_memo_of_a_single_platform_build_knows_the_index_replaced_its_tag(tmp_path):
    """`-t app` built for one platform (its no-op memo written), then for
    two (app names the index), then for one again: the last must name the
    single image again, as a full build does, not replay the memo."""
    from cache.index import Index

    context = write_context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
    time.sleep(0.3)  # older than the memo's racy window
    root = tmp_path / "root"
    single = ["build", "--root", str(root), "-t", "app", str(context)]
    for _ in range(2):
        done = pybuild(*single, tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
    assert list((root / "memo").iterdir()), "no memo was written"

    def named() -> str:
        index = Index(root / "index.db")
        try:
            return str(index.get_image("docker.io/library/app:latest"))
        finally:
            index.close()

    first = named()
    done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--root", str(root), "-t", "app", str(context),
                   tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert named() != first
    done = pybuild(*single, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert named() == first

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


@pytest.mark.parametrize("isolation", ["builtin", "oci"])
def test_an_emulated_step_cannot_touch_the_hosts_interpreter(emulator, busybox_index, tmp_path, isolation):
    """pybuild registers its interpreter from a read-only, nosuid bind mount
    (runtime/binfmt_register.py): the chmod through /proc/PID/exe fails with
    EROFS and the host's qemu keeps its mode, owner and ctime. docker 26
    (BuildKit 0.13, Debian's registration) measured: the chmod succeeds."""
    from runtime import binfmt
    from runtime.binfmt_register import host_interpreter

    usable = [h for h in binfmt.handlers() if h.enabled and h.matches(emulator.magic())]
    assert usable and all(h.read_only for h in usable), usable  # `pybuild binfmt --install arm64 --force`
    before = {path: os.stat(path) for path in {os.path.realpath(host_interpreter(h)) for h in usable}}
    context = write_context(tmp_path, PROBE.format(base=busybox_index.ref))
    out = tmp_path / "out"
    done = pybuild("build", "--platform", "linux/arm64", "--isolation", isolation, "--root", str(tmp_path / "root"),
                   "-o", f"type=local,dest={out}", str(context), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = {name: (out / name).read_text() for name in ("exe-link", "chmod", "chmod-error") if (out / name).exists()}
    for path, was in before.items():
        now = os.stat(path)
        assert (now.st_mode, now.st_uid, now.st_ctime_ns) == (was.st_mode, was.st_uid, was.st_ctime_ns), seen
    assert "chmod" not in seen, seen
    assert "Read-only file system" in seen.get("chmod-error", ""), seen  # attempted, and refused


# A step that could write binfmt_misc would choose the interpreter the host
# kernel starts for every matching executable, outside any container.
BINFMT_PROBE = """\
FROM {base}
RUN ls /proc/sys/fs/binfmt_misc > /listed 2>&1; \\
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null && echo mounted > /mounted; \\
    echo ':{name}:M::redteam-mp::/bin/sh:' > /proc/sys/fs/binfmt_misc/register 2>/dev/null && echo yes > /registered; \\
    echo 1 > /proc/sys/fs/binfmt_misc/status 2>/dev/null && echo yes > /status; \\
    true
"""


@pytest.mark.parametrize("isolation", ["builtin", "oci"])
@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_a_step_cannot_register_an_interpreter(emulator, busybox_index, tmp_path, isolation, platform):
    from runtime import binfmt
    from runtime.binfmt_register import unregister

    name = f"redteam-mp-{isolation}-{platform.split('/')[1]}"
    context = write_context(tmp_path, BINFMT_PROBE.format(base=busybox_index.ref, name=name))
    out = tmp_path / "out"
    try:
        done = pybuild("build", "--platform", platform, "--isolation", isolation, "--root", str(tmp_path / "root"),
                       "-o", f"type=local,dest={out}", str(context), tmp_path=tmp_path)
        assert done.returncode == 0, done.stderr
        assert name not in [h.name for h in binfmt.handlers()]
        assert not [f for f in ("mounted", "registered", "status") if (out / f).exists()], (out / "listed").read_text()
    finally:
        if name in [h.name for h in binfmt.handlers()]:
            unregister(name)

# --- pybuild binfmt -------------------------------------------------------------

# s390x: an architecture no other test emulates, so that registering and
# removing its handlers here disturbs no build running beside these tests.
S390X_NAME = "redteam-mp-s390x"


@pytest.fixture
def s390x_clean(emulator):
    """No s390x handler before the test; whatever the test left of them removed after."""
    from runtime import binfmt
    from runtime.binfmt_register import unregister

    s390x = binfmt.ARCHES["s390x"]
    before = [h for h in binfmt.handlers() if h.arch == s390x]
    if before:
        pytest.skip(f"s390x handlers are registered on this host already: {[h.name for h in before]}")
    yield s390x
    for handler in binfmt.handlers():
        if handler.arch == s390x:
            unregister(handler.name)


def test_uninstall_removes_only_its_own_registration(s390x_clean, tmp_path):
    """Another tool's handler of the architecture stays; pybuild's goes."""
    from runtime import binfmt
    from runtime.binfmt_register import register

    foreign = binfmt.Handler(S390X_NAME, False, "/usr/bin/qemu-s390x-static", "", 0, s390x_clean.magic(),
                             s390x_clean.mask())
    register(foreign)
    installed = pybuild("binfmt", "--install", "s390x", tmp_path=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert sorted(h.name for h in binfmt.handlers() if h.arch == s390x_clean) == ["qemu-s390x", S390X_NAME]
    # Both in one command: pybuild's is registered afresh (as after a qemu upgrade).
    again = pybuild("binfmt", "--uninstall", "s390x", "--install", "s390x", tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "s390x: removed qemu-s390x" in again.stdout and "s390x: qemu-s390x registered" in again.stdout, again.stdout
    done = pybuild("binfmt", "--uninstall", "s390x", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [h.name for h in binfmt.handlers() if h.arch == s390x_clean] == [S390X_NAME], done.stdout
    assert f"left another tool's: {S390X_NAME}" in done.stdout
    again = pybuild("binfmt", "--uninstall", "s390x", tmp_path=tmp_path)
    assert again.returncode == 0 and "pybuild's handler is not registered" in again.stdout, again
    assert [h for h in binfmt.handlers() if h.arch == s390x_clean] == [foreign]


def test_install_leaves_a_foreign_handler_of_the_same_name(s390x_clean, tmp_path):
    """qemu-s390x registered by another tool: --install refuses in one line
    naming it and its interpreter, changing nothing; --force replaces it
    with pybuild's read-only registration."""
    from runtime import binfmt
    from runtime.binfmt_register import register

    theirs = binfmt.Handler("qemu-s390x", False, "/usr/bin/qemu-s390x-static", "", 0, s390x_clean.magic(),
                            s390x_clean.mask())
    register(theirs)
    done = pybuild("binfmt", "--install", "s390x", tmp_path=tmp_path)
    error = one_line_error(done)
    assert "qemu-s390x" in error and "/usr/bin/qemu-s390x-static" in error and "--force" in error, error
    assert [h for h in binfmt.handlers() if h.arch == s390x_clean] == [theirs]
    forced = pybuild("binfmt", "--install", "s390x", "--force", tmp_path=tmp_path)
    assert forced.returncode == 0, forced.stderr
    now = [h for h in binfmt.handlers() if h.arch == s390x_clean]
    assert [(h.name, h.enabled, h.read_only) for h in now] == [("qemu-s390x", True, True)], now


def test_a_bad_binfmt_command_changes_nothing(s390x_clean, tmp_path):
    """Every name is checked before anything is done."""
    from runtime import binfmt

    installed = pybuild("binfmt", "--install", "s390x", tmp_path=tmp_path)
    assert installed.returncode == 0, installed.stderr
    registered = [h for h in binfmt.handlers() if h.arch == s390x_clean]
    assert registered
    for args in (["--uninstall", "s390x", "--install", "vax"], ["--install", "vax", "--uninstall", "s390x"],
                 ["--uninstall", "s390x,vax"], ["--uninstall", "s390x", "--force"]):
        done = pybuild("binfmt", *args, tmp_path=tmp_path)
        assert ("unknown architecture 'vax'" if "vax" in str(args) else "--force") in one_line_error(done), args
        assert [h for h in binfmt.handlers() if h.arch == s390x_clean] == registered, args


def test_binfmt_install_of_a_bad_list_changes_nothing(s390x_clean, tmp_path):
    from runtime import binfmt
    from runtime.binfmt_register import unregister

    for names in ("s390x,vax", "s390x,", "s390x,../../x"):
        done = pybuild("binfmt", "--install", names, tmp_path=tmp_path)
        if done.returncode == 0:
            assert names == "s390x,"  # an empty name is skipped, as `a,` lists are
            for handler in binfmt.handlers():
                if handler.arch == s390x_clean:
                    unregister(handler.name)
            continue
        assert "unknown architecture" in one_line_error(done)
        assert not [h for h in binfmt.handlers() if h.arch == s390x_clean]


def test_binfmt_as_nobody_changes_nothing(emulator, tmp_path):
    """An ordinary user (uid 65534, no capability), in a mount namespace of
    its own where binfmt_misc is not mounted: showing mounts nothing, and
    --install/--uninstall are refused, the host's handlers untouched."""
    from runtime import binfmt

    before = binfmt.handlers()
    as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all"
    python = "/opt/pybuild-rootless/bin/python" if Path("/opt/pybuild-rootless/bin/python").exists() else "python3"
    script = (f"umount /proc/sys/fs/binfmt_misc || exit 9; cd /; "
              f"{as_nobody} {python} -m builder.cli binfmt >&2; echo shown=$?; "
              f"{as_nobody} {python} -m builder.cli binfmt --install s390x; echo install=$?; "
              f"{as_nobody} {python} -m builder.cli binfmt --uninstall arm64; echo uninstall=$?; "
              "grep -c ' binfmt_misc ' /proc/self/mountinfo; true")
    env = pybuild_env(tmp_path, HOME="/nonexistent", XDG_CONFIG_HOME="/nonexistent", DOCKER_CONFIG="/nonexistent")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout.split() == ["shown=0", "install=1", "uninstall=1", "0"], (done.stdout, done.stderr)
    assert "not mounted" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("needs root") == 2, done.stderr
    assert binfmt.handlers() == before


# --- no leftovers when a multi-platform build is stopped ----------------------


SLEEPERS = """\
FROM {base}
ARG TARGETARCH
RUN echo start; sleep 120; echo {marker}-$TARGETARCH
"""


@pytest.mark.parametrize("isolation", ["builtin", "oci"])
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_stopped_build_leaves_nothing(emulator, busybox_index, tmp_path, isolation, signame):
    """Both platforms' steps running (arm64's under qemu), pybuild gets
    Ctrl-C (SIGINT to its process group, as a terminal sends it), SIGTERM
    or SIGKILL: no step process (qemu included) outlives it, beyond the
    next pybuild command on the root for SIGKILL, and nothing stays mounted,
    in the root's scratch or at the destination."""
    from runtime import binfmt

    marker = f"redteam-mp-{uuid.uuid4().hex[:12]}"
    context = write_context(tmp_path, SLEEPERS.format(base=busybox_index.ref, marker=marker))
    root, dest = tmp_path / "root", tmp_path / "out"
    build = subprocess.Popen(["pybuild", "build", "--platform", "linux/amd64,linux/arm64", "--isolation", isolation,
                              "--root", str(root), "-o", f"type=local,dest={dest}", str(context)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=pybuild_env(tmp_path),
                             start_new_session=True)
    try:
        wait_for(lambda: len(processes_with(marker)) >= 2, 60,
                  "both platforms' steps to run")  # the shells: a last command would be exec'd
        # qemu's argv[0] is the handler's interpreter path (pybuild's: under /run/pybuild-binfmt)
        interpreters = {h.interpreter for h in binfmt.handlers() if h.arch == emulator}
        emulated = [c for c in processes_with(marker).values() if c.split(" ", 1)[0] in interpreters]
        assert emulated, processes_with(marker)
        if signame == "SIGINT":
            os.killpg(build.pid, signal.SIGINT)
        else:
            os.kill(build.pid, getattr(signal, signame))
        _, stderr = build.communicate(timeout=60)
        assert build.returncode != 0
        if signame != "SIGKILL":
            assert "Traceback" not in stderr.decode(), stderr.decode()
        else:
            # The next command on the root takes back what the killed one left.
            again = pybuild("images", "--root", str(root), tmp_path=tmp_path)
            assert again.returncode == 0, again.stderr
        try:
            wait_for(lambda: not processes_with(marker), 15, "the steps to end")
        except AssertionError:
            left = processes_with(marker)
            reap(left)
            raise AssertionError(f"left running after {signame}: {left}") from None
        assert not dest.exists()
        root_is_clean(root)
        # Step scratch and leases on /dev/shm carry the maker's pid.
        scratch = [p.name for p in Path("/dev/shm").iterdir() if f"-{build.pid}_" in p.name]
        assert not scratch, scratch
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
        reap(processes_with(marker))


FAILS_FAST = """\
FROM {base}
ARG TARGETARCH
RUN if [ "$TARGETARCH" = amd64 ]; then sleep 3; exit 3; fi; sleep 120; echo {marker}-$TARGETARCH
"""


@pytest.mark.parametrize("isolation", ["builtin", "oci"])
def test_a_platform_failing_stops_the_emulated_one(emulator, busybox_index, tmp_path, isolation):
    """amd64's step fails while arm64's runs under qemu: the build fails
    at once with amd64's error, and the qemu process does not outlive it."""
    marker = f"redteam-mp-{uuid.uuid4().hex[:12]}"
    context = write_context(tmp_path, FAILS_FAST.format(base=busybox_index.ref, marker=marker))
    root, dest = tmp_path / "root", tmp_path / "out"
    started = time.monotonic()
    try:
        done = pybuild("build", "--platform", "linux/amd64,linux/arm64", "--isolation", isolation,
                       "--root", str(root), "-o", f"type=local,dest={dest}", str(context), tmp_path=tmp_path)
        took = time.monotonic() - started
        assert "exit code: 3" in one_error(done)
        assert took < 60, took
        left = processes_with(marker)
        assert not left, left
        assert not dest.exists()
        root_is_clean(root)
    finally:
        reap(processes_with(marker))
