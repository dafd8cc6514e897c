"""Red team B19: what this session changed (ADD archives extracted as in a
chroot of the destination with whiteouts applied, RUN's /dev, /proc, /sys
and mount stubs, cache mount identity, .dockerignore matching, COPY of
several sources), attacked with a few lines of tar or Dockerfile. Victims
live on the host in /tmp/victim-b19-*; each is compared, lstat and
content, before and after. An xfail(strict) test is an attack that works
today (its reason is the diagnosis); a plain test is an attack that fails
as it should, kept as a regression test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from builder.build import build
from fixtures.pybuild import SOURCE, pybuild_env
from fixtures.seccomp_jail import contained
from fixtures.victims import tree_state
from security.hostile import layer, member
from security.redteam_mp_checks import processes_with, reap, root_is_clean

pytestmark = pytest.mark.e2e

_BUILDS = iter(range(1, 1_000_000))


@pytest.fixture
def victim():
    """A host directory a hostile build aims at: `file`, `sub/kept`."""
    top = Path(tempfile.mkdtemp(prefix="victim-b19-", dir="/tmp"))
    (top / "file").write_text("host\n")
    (top / "sub").mkdir()
    (top / "sub" / "kept").write_text("host\n")
    before = tree_state(top)
    try:
        yield top
        assert tree_state(top) == before
    finally:
        shutil.rmtree(top)


def _context(tmp_path: Path, files: dict[str, str | bytes] | None = None) -> Path:
    ctx = tmp_path / f"ctx{next(_BUILDS)}"
    ctx.mkdir()
    for name, data in (files or {}).items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return ctx


def _build(tmp_path: Path, ctx: Path, text: str, **kwargs) -> Path:
    """Build `text` in `ctx` on tmp_path/root; the image's files, as they are."""
    out = tmp_path / f"out{next(_BUILDS)}"
    (ctx / "Dockerfile").write_text(text)
    build(ctx, root=tmp_path / "root", outputs=[f"type=local,dest={out},preserve-special=true"], **kwargs)
    return out


def _climbing(victim: Path) -> str:
    """A relative symlink target that names `victim` from any depth."""
    return "../" * 40 + str(victim).lstrip("/")


# --- 1. ADD archives never touch the host -------------------------------------


def _archive_attacks(v: Path) -> dict[str, list]:
    up = _climbing(v)
    return {
        "symlink-chain-then-write": [
            member("a", tarfile.SYMTYPE, link="b"), member("b", tarfile.SYMTYPE, link=up),
            member("a/file", data=b"evil\n"), member("a/sub/kept", data=b"evil\n")],
        "dir-replaced-by-symlink-then-written-into": [
            member("d/", tarfile.DIRTYPE), member("d/x", data=b"1"), member("d", tarfile.SYMTYPE, link=str(v)),
            member("d/file", data=b"evil\n"), member("d/new", data=b"evil\n")],
        "whiteouts-through-a-symlink-chain": [
            member("a", tarfile.SYMTYPE, link="b"), member("b", tarfile.SYMTYPE, link=up),
            member("a/.wh.file"), member("a/sub/.wh..wh..opq"), member("a/.wh.sub")],
        "opaque-whiteout-of-the-destination": [member(".wh..wh..opq"), member("z", data=b"z")],
        "opaque-whiteout-on-a-symlink-to-the-host": [
            member("l", tarfile.SYMTYPE, link=str(v)), member("l/.wh..wh..opq")],
        "whiteouts-through-a-dotdot-symlink": [
            member("l", tarfile.SYMTYPE, link=".."), member("l/.wh.file"), member("l/l/l/.wh.sub")],
        "hard-link-to-a-symlink-out-then-overwritten": [
            member("s", tarfile.SYMTYPE, link=str(v / "file")),
            member("h", tarfile.LNKTYPE, link="s", mode=0o777, uid=4321), member("h", data=b"evil\n")],
        "hard-links-made-through-a-symlink": [
            member("f", data=b"evil\n"), member("l", tarfile.SYMTYPE, link=str(v)),
            member("l/file", tarfile.LNKTYPE, link="f"), member("l/sub", tarfile.LNKTYPE, link="f")],
        "names-climbing-and-absolute": [
            member("../../../../../../../../" + str(v).lstrip("/") + "/file", data=b"evil\n"),
            member(str(v / "sub" / "kept"), data=b"evil\n"),
            member("./../" + str(v).lstrip("/") + "/.wh.file")],
        "device-nodes-through-a-symlink": [
            member("null2", tarfile.CHRTYPE, major=1, minor=3), member("fifo", tarfile.FIFOTYPE),
            member("l", tarfile.SYMTYPE, link=str(v)), member("l/file", tarfile.CHRTYPE, major=1, minor=3)],
        "dotdot-symlink-as-a-directory": [
            member("x", tarfile.SYMTYPE, link="../../../../../../.."),
            member("x" + str(v) + "/file", data=b"evil\n"), member("x" + str(v) + "/.wh.sub")],
        "directory-members-through-a-symlink": [
            member("l", tarfile.SYMTYPE, link=str(v)),
            member("l/sub/", tarfile.DIRTYPE, mode=0o777, uid=4321),
            member("l/", tarfile.DIRTYPE, mode=0o777, uid=4321)],
    }


@pytest.mark.parametrize("dest", ["/d/", "/"])
@pytest.mark.parametrize("attack", sorted(_archive_attacks(Path("/v"))))
def test_an_add_archive_changes_nothing_on_the_host(tmp_path, busybox_image, victim, attack, dest):
    ctx = _context(tmp_path, {"a.tar": layer(*_archive_attacks(victim)[attack])})
    emptied = attack == "opaque-whiteout-of-the-destination" and dest == "/"
    # A RUN afterwards: the image's planted links meet a step's mounts too
    # (but in an image the archive emptied, which has no shell left).
    out = _build(tmp_path, ctx, f"FROM {busybox_image.ref}\nADD a.tar {dest}\n" + ("" if emptied else "RUN true\n"))
    if emptied:
        assert os.listdir(out) == ["z"]  # the image's root only
    root_is_clean(tmp_path / "root")


def test_an_add_opaque_whiteout_on_the_destination_empties_it_in_the_image_only(tmp_path, busybox_image, victim):
    ctx = _context(tmp_path, {"a.tar": layer(member("l", tarfile.SYMTYPE, link=str(victim)),
                                             member(".wh..wh..opq"), member("z", data=b"z"))})
    out = _build(tmp_path, ctx, f"FROM {busybox_image.ref}\nRUN mkdir /d && touch /d/old\nADD a.tar /d/\n")
    assert sorted(os.listdir(out / "d")) == ["l", "z"]
    assert os.readlink(out / "d" / "l") == str(victim)


# --- 1. RUN never touches the host, whatever the image planted ------------------


@pytest.mark.parametrize("isolation", ["builtin", "oci", "chroot"])
def test_run_mounts_through_planted_links_stay_in_the_image(tmp_path, busybox_image, victim, isolation):
    secret = tmp_path / "secret"
    secret.write_text("S\n")
    v, up = str(victim), _climbing(victim)
    # /etc can be replaced by an archive only: every step mounts /etc/hosts.
    etc = layer(member("etc", tarfile.SYMTYPE, link=v))
    text = (f"FROM {busybox_image.ref}\n"
            f"RUN ln -s {v} /m && ln -s {up} /r && mkdir -p /run && ln -s {v} /run/secrets\n"
            "ADD etc.tar /\n"
            "RUN --mount=type=tmpfs,target=/m/x --mount=type=bind,target=/r/sub/y --mount=type=cache,target=/m/c "
            "--mount=type=secret,id=s --mount=type=secret,id=s,target=/r/file "
            "echo hi > /m/out; rm -rf /m/sub; true\n")
    out = _build(tmp_path, _context(tmp_path, {"f": "ctx\n", "etc.tar": etc}), text, isolation=isolation,
                 secrets=[f"id=s,src={secret}"])
    # The step's own writes went to the image's /tmp/victim-b19-*; every
    # stub made for its mounts is gone again.
    assert sorted(os.listdir(out / v.lstrip("/"))) == ["out"]
    root_is_clean(tmp_path / "root")


def _run_contained(tmp_path: Path, ctx: Path, isolation: str, timeout: float, *, jailed: bool = True
                   ) -> tuple[int | None, str]:
    """The real pybuild CLI, as root of an unprivileged container (no
    mount(2), no namespaces: --isolation chroot mounts nothing) when
    `jailed`; (exit status, output), None when it had not ended in
    `timeout` seconds (it is then killed, with what it started)."""
    args = [sys.executable, "-m", "builder.cli", "build", "--root", str(tmp_path / "root"), "--progress", "plain",
            "--isolation", isolation, "-o", f"type=local,dest={tmp_path / 'out'}", str(ctx)]
    proc = subprocess.Popen(contained(*args) if jailed else args, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=SOURCE, env=pybuild_env(tmp_path),
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        for lease in Path("/dev/shm").glob(f"pybuild-lease-{proc.pid}_*"):
            lease.unlink()  # what kill -9 left: the next pybuild would sweep it
        shutil.rmtree(tmp_path / "root", ignore_errors=True)
        return None, output


# Was a hang: _unplant opened the planted path for writing before checking
# it was still the file it made, and open(2) of a FIFO for writing waits
# for a reader. It is now opened O_PATH, checked, then reopened.
@pytest.mark.parametrize("name", ["hosts", "resolv.conf"])
def test_a_step_replacing_a_planted_etc_file_by_a_fifo_does_not_hang_chroot(tmp_path, busybox_image, name):
    ctx = _context(tmp_path)
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN rm /etc/{name} && mkfifo /etc/{name}\n")
    status, output = _run_contained(tmp_path, ctx, "chroot", timeout=40)
    assert status is not None, f"the build hung after its step:\n{output[-2000:]}"
    assert status == 0, output
    assert (tmp_path / "out" / "etc").is_dir()


def test_a_step_replacing_a_planted_etc_file_by_a_link_out_stays_in_the_image(tmp_path, busybox_image, victim):
    # The same place without the FIFO: what chroot's cleanup writes (it
    # truncates the stub it filled) must never go through the step's link.
    ctx = _context(tmp_path)
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN rm /etc/hosts /etc/resolv.conf "
                                    f"&& ln -s {victim}/file /etc/hosts && ln -s {_climbing(victim)}/sub/kept "
                                    "/etc/resolv.conf && rm -rf /dev/null && ln -s /tmp/victim /dev/null\n")
    status, output = _run_contained(tmp_path, ctx, "chroot", timeout=120)
    assert status == 0, output
    assert os.readlink(tmp_path / "out" / "etc" / "hosts") == f"{victim}/file"
    root_is_clean(tmp_path / "root")


# --- 2. a .dockerignore'd file reaches nothing ------------------------------------


_IGNORED = {".dockerignore": "secret\nsecretdir\nsub/ign\n*.log\n", "secret": "S3CRET\n", "secretdir/x": "S3CRET\n",
            "sub/ign": "S3CRET\n", "keep": "k\n", "a.txt": "a\n", "b.log": "S3CRET\n"}


@pytest.mark.parametrize("line", ["COPY link /got", "COPY dirlink/ /got/", "COPY dirlink/x /got", "ADD link /got",
                                  "RUN --mount=type=bind,source=secret,target=/x cat /x > /got"])
def test_an_ignored_file_named_through_a_context_symlink_is_not_found(tmp_path, busybox_image, line):
    ctx = _context(tmp_path, _IGNORED)
    os.symlink("secret", ctx / "link")
    os.symlink("secretdir", ctx / "dirlink")
    with pytest.raises(Exception, match="not found"):
        _build(tmp_path, ctx, f"FROM {busybox_image.ref}\n{line}\n")


def test_an_ignored_file_reaches_no_copy_bind_or_cache_key(tmp_path, busybox_image):
    ctx = _context(tmp_path, _IGNORED)
    os.symlink("secret", ctx / "link")
    named = tmp_path / "named"
    named.mkdir()
    (named / ".dockerignore").write_text("nign\n")
    (named / "nign").write_text("S3CRET\n")
    (named / "nkeep").write_text("k\n")
    text = (f"FROM {busybox_image.ref}\nCOPY . /c/\nCOPY *.* /t/\n"
            "RUN --mount=type=bind,target=/b (ls -aR /b; cat /b/secret /b/link /b/sub/ign; "
            "cat /proc/sys/kernel/random/uuid) > /u 2>&1; true\n"
            "RUN --mount=type=bind,from=named,target=/b (ls -aR /b; cat /b/nign; "
            "cat /proc/sys/kernel/random/uuid) > /v 2>&1; true\n"
            "RUN --mount=type=cache,from=named,target=/b (ls -aR /b; cat /b/nign; "
            "cat /proc/sys/kernel/random/uuid) > /w 2>&1; true\n"
            "COPY --from=named . /n/\n")
    contexts = [f"named={named}"]
    out = _build(tmp_path, ctx, text, build_contexts=contexts)
    runs = {name: (out / name).read_text() for name in "uvw"}
    for name, text_seen in runs.items():
        assert "S3CRET" not in text_seen, (name, text_seen)
    assert sorted(os.listdir(out / "c")) == [".dockerignore", "Dockerfile", "a.txt", "keep", "link", "sub"]
    assert sorted(os.listdir(out / "t")) == [".dockerignore", "a.txt"]
    assert os.listdir(out / "c" / "sub") == []
    assert sorted(os.listdir(out / "n")) == [".dockerignore", "nkeep"]
    for path in (ctx / "secret", ctx / "secretdir" / "x", ctx / "sub" / "ign", ctx / "b.log", named / "nign"):
        path.write_text("CHANGED, LONGER\n")
    (ctx / "secretdir" / "new").write_text("new\n")
    again = _build(tmp_path, ctx, text, build_contexts=contexts)
    assert {name: (again / name).read_text() for name in "uvw"} == runs  # no step ran again


@pytest.mark.parametrize("ignore", ["secret\r\nsecretdir\r\n", "\ufeffsecret\nsecretdir\n", "  secret  \nsecretdir\n",
                                    "./secret\n/secretdir/\n", "x/../secret\nsecretdir/**\n", "s[e]cret\nsec?etdir\n",
                                    "secre[s-u]\nsecretdi[^a]\n", "*\n!keep\n", "**/secret*\n"])
def test_every_spelling_of_an_ignore_pattern_keeps_the_file_out(tmp_path, busybox_image, ignore):
    ctx = _context(tmp_path, {**_IGNORED, ".dockerignore": ignore.encode()})
    out = _build(tmp_path, ctx, f"FROM {busybox_image.ref}\nCOPY . /c/\n")
    copied = {str(path.relative_to(out / "c")) for path in (out / "c").rglob("*")}
    # (`secretdir/**` leaves the empty directory, as patternmatcher does)
    assert not copied & {"secret", "secretdir/x"}, copied
    assert "keep" in copied


# --- 3. the cache is never wrong ------------------------------------------------


def test_an_edit_keeping_size_and_mtime_is_copied_again(tmp_path, busybox_image):
    ctx = _context(tmp_path, {"a": "AAAA\n"})
    before = os.stat(ctx / "a")
    text = f"FROM {busybox_image.ref}\nCOPY a /a\n"
    assert (_build(tmp_path, ctx, text) / "a").read_text() == "AAAA\n"
    (ctx / "a").write_text("BBBB\n")  # in place: same inode
    os.utime(ctx / "a", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (_build(tmp_path, ctx, text) / "a").read_text() == "BBBB\n"
    (ctx / "a").rename(ctx / "old")  # another inode, same name, size and mtime
    (ctx / "a").write_text("CCCC\n")
    os.utime(ctx / "a", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (_build(tmp_path, ctx, text) / "a").read_text() == "CCCC\n"


def test_an_edit_keeping_size_and_mtime_is_copied_again_by_the_cli(tmp_path, busybox_image):
    # Through the CLI, whose memo answers a rebuild from lstat alone.
    ctx = _context(tmp_path, {"a": "AAAA\n", "Dockerfile": f"FROM {busybox_image.ref}\nCOPY a /a\n"})
    before = os.stat(ctx / "a")
    out = tmp_path / "out"
    iidfile = tmp_path / "iid"
    args = ["pybuild", "build", "--root", str(tmp_path / "root"), "-t", "b19-memo", "--iidfile", str(iidfile),
            str(ctx)]
    for _ in range(2):  # the second writes the memo once the context settled
        subprocess.run(args, check=True, capture_output=True, timeout=120, env=pybuild_env(tmp_path))
    assert os.listdir(tmp_path / "root" / "memo")  # the next run could replay it
    old_image = iidfile.read_text()
    (ctx / "a").write_text("BBBB\n")
    os.utime(ctx / "a", ns=(before.st_atime_ns, before.st_mtime_ns))
    subprocess.run(args, check=True, capture_output=True, timeout=120, env=pybuild_env(tmp_path))
    # A replay would have written the old image's ID again.
    assert iidfile.read_text() != old_image
    subprocess.run(["pybuild", "build", "--root", str(tmp_path / "root"), "-o", f"type=local,dest={out}",
                    str(ctx)], check=True, capture_output=True, timeout=120, env=pybuild_env(tmp_path))
    assert (out / "a").read_text() == "BBBB\n"


def test_cache_mounts_buildkit_tells_apart_share_nothing(tmp_path, busybox_image):
    named = tmp_path / "named"
    named.mkdir()
    (named / "f").write_text("v1\n")
    text = (f"FROM {busybox_image.ref} AS s\nCOPY --from=named f /f\n"
            f"FROM {busybox_image.ref}\n"
            "RUN --mount=type=cache,id=k,target=/c echo plain > /c/f\n"
            "RUN --mount=type=cache,id=k,target=/c,from=named cat /c/f > /named\n"
            "RUN --mount=type=cache,id=k,target=/c,from=s cat /c/f > /stage\n"
            "RUN --mount=type=cache,id=k,target=/c,uid=7 (cat /c/f || echo empty) > /owned 2>/dev/null\n"
            "RUN --mount=type=cache,id=k,target=/c,mode=0700 (cat /c/f || echo empty) > /moded 2>/dev/null\n"
            "RUN --mount=type=cache,id=k,target=/c cat /c/f > /plain\n")
    contexts = [f"named={named}"]
    ctx = _context(tmp_path)
    out = _build(tmp_path, ctx, text, build_contexts=contexts)
    seen = {name: (out / name).read_text() for name in ("named", "stage", "owned", "moded", "plain")}
    assert seen == {"named": "v1\n", "stage": "v1\n", "owned": "empty\n", "moded": "empty\n", "plain": "plain\n"}
    (named / "f").write_text("v2\n")
    out = _build(tmp_path, ctx, text, build_contexts=contexts)
    assert (out / "named").read_text() == "v2\n" and (out / "stage").read_text() == "v2\n"


@pytest.mark.parametrize("snapshotter", ["overlayfs", "fuse-overlayfs", "native"])
def test_a_directory_made_again_keeps_hiding_what_it_held(tmp_path, busybox_image, snapshotter, monkeypatch):
    # runtime/prune.py leaves out a directory whose mtime alone changed: one
    # removed and made again (opaque) is a change, whatever its metadata.
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", snapshotter)
    text = (f"FROM {busybox_image.ref}\nRUN mkdir -p /d/e /k && touch /d/x /d/e/y /k/z\n"
            "RUN rm -rf /d && mkdir -p /d/e && rm /k/z && touch /k\n")
    out = _build(tmp_path, _context(tmp_path), text)
    assert (os.listdir(out / "d"), os.listdir(out / "d" / "e"), os.listdir(out / "k")) == (["e"], [], [])


# --- 1 and 4. COPY of several sources, and nothing left behind ----------------------


@pytest.mark.parametrize("line", ["COPY a b /link", "COPY a b /flink", "COPY d1 d2 /link", "COPY d1 d2 /ulink",
                                  "COPY d1 /dang", "COPY d1 a /ulink", "COPY d1 /link/", "COPY --parents d1 /link",
                                  "COPY --chown=4321:4321 --chmod=777 d1 /ulink",
                                  "COPY --chown=4321:4321 --chmod=777 a /flink"])
def test_copy_of_several_sources_through_planted_links_stays_in_the_image(tmp_path, busybox_image, victim, line):
    ctx = _context(tmp_path, {"a": "A\n", "b": "B\n", "d1/x": "X\n", "d2/y": "Y\n"})
    os.utime(ctx / "d1", (1, 1))  # copied to the destination directory now
    v = str(victim)
    _build(tmp_path, ctx, f"FROM {busybox_image.ref}\nRUN ln -s {v} /link && ln -s {v}/file /flink "
                          f"&& ln -s {_climbing(victim)}/sub /ulink && ln -s {v}/nothere /dang\n{line}\n")


@pytest.mark.parametrize("mode", ["chroot-without-mounts", "chroot", "builtin", "oci"])
def test_a_steps_detached_children_do_not_outlive_the_build(tmp_path, busybox_image, mode):
    marker = f"9{os.getpid() % 100000}17"
    ctx = _context(tmp_path)
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN (setsid sleep {marker} &); "
                                    f"(nohup sleep {marker}1 > /dev/null 2>&1 &); sleep 0.2\n")
    status, output = _run_contained(tmp_path, ctx, mode.split("-")[0], timeout=120,
                                    jailed=mode == "chroot-without-mounts")
    left = processes_with(f"sleep {marker}")
    reap(left)
    assert status == 0, output
    assert not left, left
    root_is_clean(tmp_path / "root")
