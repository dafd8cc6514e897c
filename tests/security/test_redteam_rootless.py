"""Red-team round on rootless pybuild (issue 16): each attack performed as
the ordinary user `pybuild-rootless` (tests/fixtures/rootless.py), then the
victim's state checked. All of these were found failing at ea835de and were
fixed in cd962ab and 9785165; they stay as regression tests:

- a RUN step under `--isolation chroot` left the chroot (chroot, not
  pivot_root, although a mount namespace was there) and, as root of the
  user's namespace, wrote the user's own files (~/.bashrc);
- a setuid file a RUN left in a cache mount sat in ROOT/cachemounts/ID,
  0755 under a 0755 root: any local user ran it as the building user
  (rootless) or as root (a root build, /var/lib/pybuild being 0755);
- a base image with a device node could not be used rootless at all (an
  ADD archive's is now skipped there, as documented);
- a step's user.overlay.opaque (native, fuse-overlayfs) or user.pybuild.path
  (native) made a directory opaque in the layer, hiding files the step saw;
- fuse-overlayfs gave copied-up and marked directories new mtimes, so its
  digest differed from overlayfs' and native's;
- HOME unset read /root; a relative XDG_DATA_HOME was used; ids above the
  range in USER, a cache mount's or a secret's uid= gave errno or runc
  messages; a 0555 root was written anyway.

Found open at the end of the round, fixed since: the device-node skip wrote
nothing in the node's place, so a lower layer's file or directory the image
replaced with a device showed through in a rootless build (now a whiteout);
a step's own files named .wh.X or .wh..wh..opq became whiteouts in its layer
on overlayfs and native (fuse-overlayfs refuses the names, failing the step):
every snapshotter now refuses the build, the layer writer with one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.pybuild import pybuild_env
from fixtures.rootless import child_of, processes_of, temp_files_in, wait_for_no_processes
from security.hostile import layer, member, push_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rootless"))
from rootless_helpers import Archive  # noqa: E402

EPOCH = "1700000000"


def _root_build(tmp_path: Path, context: Path, dest: Path, *args: str, env: dict | None = None):
    return subprocess.run([sys.executable, "-c", "from builder.entry import main; main()", "build",
                           "--root", str(tmp_path / "root"), *args,
                           "-o", f"type=oci,dest={dest},rewrite-timestamp=true", str(context)],
                          env=pybuild_env(tmp_path, SOURCE_DATE_EPOCH=EPOCH, **(env or {})),
                          capture_output=True, timeout=180)


def _errors(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.decode(errors="replace").splitlines() if line.startswith("ERROR")]


# --- 1. a chroot step reaching the user's files ------------------------------------------------

ESCAPE_C = r"""
#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
int main(int argc, char **argv) {
  mkdir("/.esc", 0755);
  int fd = open("/", O_RDONLY);
  if (chroot("/.esc")) { perror("chroot"); return 1; }
  if (fchdir(fd)) { perror("fchdir"); return 1; }
  for (int i = 0; i < 64; i++) chdir("..");
  if (chroot(".")) { perror("chroot ."); return 1; }
  execv(argv[1], argv + 1);
  perror("exec");
  return 1;
}
"""


def _escape_binary(tmp_path: Path) -> bytes:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the static escape binary")
    (tmp_path / "esc.c").write_text(ESCAPE_C)
    done = subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp_path / "esc"), str(tmp_path / "esc.c")],
                          capture_output=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"no static libc to link the escape binary: {done.stderr.decode(errors='replace')[-200:]}")
    return (tmp_path / "esc").read_bytes()


@pytest.mark.parametrize("isolation", [
    "builtin", "oci",
    "chroot",
])
def test_a_run_step_cannot_write_the_users_home(rootless, busybox_image, tmp_path, isolation):
    bashrc = rootless.home / ".bashrc"
    bashrc.write_text("# the user's own\n")
    rootless.give(bashrc)
    # SAW-$((1+1)) prints SAW-2: the marker is not in the echoed command line.
    script = f"echo PWNED >> {bashrc}; ls {rootless.home} > /dev/null && echo SAW-$((1+1))"
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nCOPY esc /esc\n"
                                     f"RUN /esc /bin/sh -c '{script}' || true\n",
                                     {"esc": _escape_binary(tmp_path)})
    (context / "esc").chmod(0o755)
    done = rootless.ok("build", "--no-cache", "--progress=plain", "--isolation", isolation, str(context))
    assert bashrc.read_text() == "# the user's own\n"
    assert b"SAW-2" not in done.stderr


# --- 2. device nodes in a base image or an ADD archive -----------------------------------------

DEVICE_LAYER = layer(member("x/", b"5", mode=0o755), member("x/null", b"3", mode=0o666, major=1, minor=3),
                     member("x/file", data=b"data\n"))


def test_a_base_image_with_a_device_node_builds_rootless(rootless, busybox_image, registry, tmp_path):
    ref = push_image(registry, tmp_path / "devimage", [DEVICE_LAYER])
    context = rootless.write_context("ctx", f"FROM {ref}\nRUN cat /x/file > /copy\n")
    rootless.ok("build", str(context))


def test_add_of_an_archive_with_a_device_node_skips_the_node_rootless(rootless, busybox_image, tmp_path):
    """docs/architecture.md: a user namespace cannot make a device node, so
    an ADD archive's are skipped (the one way the image differs from root's);
    root's build keeps it."""
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\nADD dev.tar /\n", {"dev.tar": DEVICE_LAYER})
    done = _root_build(tmp_path, context, tmp_path / "root.tar")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    user_tar = rootless.home / "user.tar"
    rootless.ok("build", "-o", f"type=oci,dest={user_tar},rewrite-timestamp=true", str(context),
                env={"SOURCE_DATE_EPOCH": EPOCH})
    assert {m.name for m in Archive(user_tar).layer(-1)} == {"x", "x/file"}
    assert {m.name for m in Archive(tmp_path / "root.tar").layer(-1)} == {"x", "x/file", "x/null"}


def test_a_skipped_device_node_does_not_bring_back_what_it_replaced(rootless, busybox_image, registry, tmp_path):
    lower = layer(member("x/", b"5", mode=0o755), member("x/b", data=b"lower b\n"), member("x/d/", b"5", mode=0o755),
                  member("x/d/secret", data=b"removed by the image\n"))
    upper = layer(member("x/b", b"3", mode=0o666, major=1, minor=3), member("x/d", b"3", mode=0o666, major=1, minor=3))
    ref = push_image(registry, tmp_path / "replaced", [lower, upper])
    context = rootless.write_context("ctx", f"FROM {ref}\nRUN test ! -f /x/b && test ! -d /x/d\n")
    rootless.ok("build", str(context))


# --- 3. the environment: HOME unset, a relative XDG_DATA_HOME, ids above the range, modes ------

def test_home_unset_never_reaches_roots_home(rootless, busybox_image):
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\n")
    command = [part for part in rootless.command("build", str(context)) if not part.startswith("HOME=")]
    done = subprocess.run(command, capture_output=True, cwd="/", timeout=120)
    assert b"/root" not in done.stderr, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr


def test_a_relative_xdg_data_home_is_ignored(rootless):
    done = rootless.ok("info", env={"XDG_DATA_HOME": "relative"})
    root = [line for line in done.stdout.decode().splitlines() if line.startswith("root:")]
    assert root == [f"root:                  {rootless.root}"], root


ABOVE_RANGE = {
    "copy-chown": ("COPY --chown=70000:70000 file /file\n", ()),
    "cache-uid": ("RUN --mount=type=cache,target=/c,uid=70000 true\n", ()),
    "secret-uid": ("RUN --mount=type=secret,id=s,uid=70000 true\n", ("--secret", "id=s,src={context}/file")),
    "user": ("USER 70000\nRUN true\n", ()),
}
@pytest.mark.parametrize("case", ABOVE_RANGE)
def test_an_id_above_the_range_is_one_line_naming_subuid(rootless, busybox_image, case):
    step, args = ABOVE_RANGE[case]
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\n{step}", {"file": "x\n"})
    done = rootless.run("build", "--no-cache", *(a.format(context=context) for a in args), str(context))
    errors = _errors(done)
    assert done.returncode == 1 and len(errors) == 1, done.stderr.decode(errors="replace")
    assert "/etc/subuid" in errors[0], errors[0]


def test_a_read_only_root_is_refused(rootless, busybox_image):
    root = rootless.mkdir("ro-root")
    root.chmod(0o555)
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\n")
    done = rootless.run("build", "--root", str(root), str(context))
    assert done.returncode == 1 and len(_errors(done)) == 1, done.stderr.decode(errors="replace")
    assert os.listdir(root) == []


# --- 4. setuid files of a cache mount within other users' reach ------------------------------

SUID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("uid=%d euid=%d\n", getuid(), geteuid()); return 0; }
"""


def _unreachable_by_others(path: Path, root: Path) -> bool:
    """Whether some directory between `root` (included) and `path` denies
    search to other users: only then can nobody but the owner run it."""
    return any(not os.stat(root / directory).st_mode & 0o001
               for directory in path.relative_to(root).parents)


@pytest.mark.parametrize("who", ["user", "root"])
def test_a_setuid_file_in_a_cache_mount_is_out_of_other_users_reach(rootless, busybox_image, tmp_path, who):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed")
    (tmp_path / "p.c").write_text(SUID_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp_path / "p"), str(tmp_path / "p.c")], check=True,
                   capture_output=True, timeout=120)
    context = rootless.write_context("ctx", (
        f"FROM {busybox_image.ref}\nCOPY p /p\n"
        "RUN --mount=type=cache,target=/c cp /p /c/p && chmod 4755 /c/p\n"), {"p": (tmp_path / "p").read_bytes()})
    if who == "user":
        root = rootless.root
        rootless.ok("build", str(context))
    else:
        root = tmp_path / "root"
        done = _root_build(tmp_path, context, tmp_path / "out.tar")
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    planted = [path for path in root.rglob("p") if path.is_file() and path.stat().st_mode & 0o4000]
    assert planted, "the step's setuid file should be in the cache mount"
    for path in planted:
        assert _unreachable_by_others(path, root), f"{path} ({oct(path.stat().st_mode)}) is reachable by others"


# --- 5. files a step names like whiteouts ---------------------------------------------------

WH_DOCKERFILE = ("FROM {base}\nRUN mkdir -p /o && echo keep > /o/keep\n"
                 "RUN touch /etc/.wh.passwd /o/.wh..wh..opq /o/new\n")
@pytest.mark.parametrize("snapshotter", ["overlayfs", "native", "fuse-overlayfs"])
def test_a_step_cannot_write_a_whiteout_into_its_layer(rootless, busybox_image, snapshotter):
    context = rootless.write_context("ctx", WH_DOCKERFILE.format(base=busybox_image.ref))
    dest = rootless.home / "out.tar"
    done = rootless.run("build", "-o", f"type=oci,dest={dest}", str(context),
                        env={"PYBUILD_SNAPSHOTTER": snapshotter})
    if done.returncode != 0:  # refusing the step is a fine answer, with one line
        assert done.returncode == 1 and len(_errors(done)) == 1, done.stderr.decode(errors="replace")
        return
    names = {m.name for m in Archive(dest).layer(-1)}
    assert not names & {"etc/.wh.passwd", "o/.wh..wh..opq"}, sorted(names)


def test_a_whiteout_named_file_is_refused_on_every_snapshotter(rootless, busybox_image):
    """The snapshotter does not decide whether such a step builds: none
    does (fuse-overlayfs fails the step, the others the layer)."""
    context = rootless.write_context("ctx", WH_DOCKERFILE.format(base=busybox_image.ref))
    for snapshotter in ("overlayfs", "native", "fuse-overlayfs"):
        done = rootless.run("build", "--no-cache", "-o", f"type=oci,dest={rootless.home / 'out.tar'}", str(context),
                            env={"PYBUILD_SNAPSHOTTER": snapshotter})
        assert done.returncode == 1 and len(_errors(done)) == 1, (snapshotter, done.stderr.decode(errors="replace"))
        assert not (rootless.home / "out.tar").exists()
    errors = _errors(rootless.run("build", "--no-cache", str(context), env={"PYBUILD_SNAPSHOTTER": "overlayfs"}))
    assert "/etc/.wh.passwd: a file whose name starts with .wh. cannot be in a layer: it would delete /etc/passwd" \
        in errors[0], errors


# --- what held ---------------------------------------------------------------------------------

SETXATTR_C = r"""
#include <string.h>
#include <stdio.h>
#include <sys/xattr.h>
int main(int argc, char **argv) {
  for (int i = 2; i + 1 < argc; i += 2)
    if (lsetxattr(argv[1], argv[i], argv[i + 1], strlen(argv[i + 1]), 0)) perror(argv[i]);
  return 0;
}
"""


@pytest.mark.parametrize("snapshotter, xattr, value", [
    ("native", "user.overlay.opaque", "y"),
    ("native", "user.pybuild.path", "bin"),
    ("fuse-overlayfs", "user.overlay.opaque", "y"),
    ("fuse-overlayfs", "user.fuseoverlayfs.opaque", "y"),
    ("overlayfs", "user.overlay.opaque", "y"),
])
def test_marks_a_step_sets_do_not_change_the_image(rootless, busybox_image, tmp_path, snapshotter, xattr, value):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed")
    (tmp_path / "sx.c").write_text(SETXATTR_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp_path / "sx"), str(tmp_path / "sx.c")], check=True,
                   capture_output=True, timeout=120)
    context = rootless.write_context("ctx", (
        f"FROM {busybox_image.ref}\nCOPY sx /sx\nRUN mkdir -p /o && echo keep > /o/keep\n"
        f"RUN /sx /o {xattr} {value} && touch /o/new\n"), {"sx": (tmp_path / "sx").read_bytes()})
    (context / "sx").chmod(0o755)
    user_tar = rootless.home / "user.tar"
    rootless.ok("build", "-o", f"type=oci,dest={user_tar},rewrite-timestamp=true", str(context),
                env={"SOURCE_DATE_EPOCH": EPOCH, "PYBUILD_SNAPSHOTTER": snapshotter})
    done = _root_build(tmp_path, context, tmp_path / "root.tar", env={"PYBUILD_SNAPSHOTTER": "overlayfs"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert "o/.wh..wh..opq" not in {m.name for m in Archive(user_tar).layer(-1)}
    assert Archive(user_tar).manifest_digest == Archive(tmp_path / "root.tar").manifest_digest


@pytest.mark.parametrize("who, snapshotter", [
    ("user", "native"), ("root", "native"),
    ("user", "fuse-overlayfs"),
    ("root", "fuse-overlayfs"),
])
def test_directory_mtimes_are_the_same_on_every_snapshotter(rootless, busybox_image, tmp_path, who, snapshotter):
    archive = layer(member("o/", b"5", mode=0o755), member("o/d/", b"5", mode=0o755), member("o/d/f", data=b"f\n"))
    context = rootless.write_context("ctx", (
        f"FROM {busybox_image.ref}\nRUN chown 0:0 /bin/busybox\nRUN mkdir /e && touch -d @0 /e\nADD o.tar /x/\n"),
        {"o.tar": archive})
    reference = _root_build(tmp_path, context, tmp_path / "reference.tar", env={"PYBUILD_SNAPSHOTTER": "overlayfs"})
    assert reference.returncode == 0, reference.stderr.decode(errors="replace")
    if who == "user":
        dest = rootless.home / "user.tar"
        rootless.ok("build", "-o", f"type=oci,dest={dest},rewrite-timestamp=true", str(context),
                    env={"SOURCE_DATE_EPOCH": EPOCH, "PYBUILD_SNAPSHOTTER": snapshotter})
    else:
        dest = tmp_path / "other.tar"
        done = _root_build(tmp_path, context, dest, "--no-cache", env={"PYBUILD_SNAPSHOTTER": snapshotter})
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    ours, theirs = Archive(dest), Archive(tmp_path / "reference.tar")
    for index in (-3, -2, -1):  # the RUNs, then the ADD (an archive's directory times are lost too)
        assert [(m.name, m.mtime) for m in ours.layer(index)] == [(m.name, m.mtime) for m in theirs.layer(index)]
    assert ours.manifest_digest == theirs.manifest_digest


DAEMONS = ("RUN setsid sh -c 'sleep 311 & sleep 312' </dev/null >/dev/null 2>&1 & "
           "(unshare -U -r -p -f sleep 313 </dev/null >/dev/null 2>&1 &); "
           "start-stop-daemon -S -b -x /bin/sleep -- 314; echo step-started; sleep 30\n")


@pytest.mark.parametrize("isolation, snapshotter", [("chroot", None), ("chroot", "fuse-overlayfs"),
                                                    ("chroot", "native"), ("builtin", "fuse-overlayfs")])
def test_kill_9_with_daemons_leaves_no_process(rootless, busybox_image, isolation, snapshotter):
    """Not in test_rootless_leftovers' cases: chroot, and daemons of a step
    in sessions and pid namespaces of their own."""
    if snapshotter:
        rootless.env["PYBUILD_SNAPSHOTTER"] = snapshotter
    context = rootless.write_context("ctx", f"FROM {busybox_image.ref}\n{DAEMONS}")
    process = rootless.popen("build", "--progress=plain", "--isolation", isolation, str(context))
    try:
        seen, deadline = b"", time.monotonic() + 60
        while b"step-started" not in seen and time.monotonic() < deadline and process.poll() is None:
            seen += os.read(process.stderr.fileno(), 65536)
        assert b"step-started" in seen, seen.decode(errors="replace")
        deadline = time.monotonic() + 10
        while sum(name.startswith("sleep ") for name in processes_of(rootless.host).values()) < 4:
            assert time.monotonic() < deadline, processes_of(rootless.host)
            time.sleep(0.05)
        os.kill(child_of(process.pid), signal.SIGKILL)
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert wait_for_no_processes(rootless.host) == {}
    again = rootless.write_context("again", f"FROM {busybox_image.ref}\nRUN true\n")
    rootless.ok("build", "--isolation", isolation, str(again))
    assert temp_files_in(rootless.home) == []


def test_archive_symlinks_stay_inside_the_rootfs(rootless, busybox_image):
    """An ADD archive plants an absolute symlink to the user's HOME, a later
    archive and a COPY write through it; a local export follows neither."""
    bashrc = rootless.home / ".bashrc"
    bashrc.write_text("# the user's own\n")
    rootless.give(bashrc)
    first = layer(member("lnk", b"2", link=str(rootless.home), mode=0o777), member("lnk/pwn1", data=b"x"))
    second = layer(member("lnk/pwn2", data=b"x"), member("lnk/.bashrc", data=b"PWNED\n"))
    context = rootless.write_context("ctx", (
        f"FROM {busybox_image.ref}\nADD a.tar /x/\nADD b.tar /x/\nCOPY --from={busybox_image.ref} /bin/busybox "
        "/x/lnk/pwn3\n"), {"a.tar": first, "b.tar": second})
    for snapshotter in ("overlayfs", "native", "fuse-overlayfs"):
        rootless.ok("build", "-o", f"type=local,dest={rootless.home / ('out-' + snapshotter)}", str(context),
                    env={"PYBUILD_SNAPSHOTTER": snapshotter})
    assert bashrc.read_text() == "# the user's own\n"
    assert not any((rootless.home / name).exists() for name in ("pwn1", "pwn2", "pwn3"))
