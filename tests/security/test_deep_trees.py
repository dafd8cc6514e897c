"""Trees deeper than Python's recursion limit (1000) never break a build or
a root: a RUN making one, a cache mount seeded from one, a deep WORKDIR,
an ADD of a deep archive, a stdin context holding one, a base image whose
layer is one, through FROM, RUN and COPY --from. Each builds as docker
builds it, and afterwards `doctor` is clean, `du`, `info` and `prune -a`
work and leave nothing of the tree behind. A deep member unpacks, and a
deep tree is copied, with few fds; what a filesystem refuses in a layer
(a name too long, a file too large, an xattr) is one error naming the
member, where containerd's extraction would fail too.

Every build is the real CLI in a child process: exit status, stderr and
the root are what a user would see."""

from __future__ import annotations

import errno
import io
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fixtures.pybuild import SOURCE, pybuild_env
from runtime.fsutil import remove_tree
from security import hostile
from security.hostile import layer, member

DEPTH = 1500  # beyond the recursion limit, well within PATH_MAX for one-letter names


def _deep(name: str, depth: int = DEPTH) -> str:
    return "/".join([name] * depth)


@pytest.fixture(autouse=True)
def _deep_trees_go(tmp_path):
    # pytest's own tmp_path walks (the leak check's rglob) recurse per level.
    yield
    for entry in os.listdir(tmp_path):
        if (tmp_path / entry).is_dir():
            remove_tree(tmp_path / entry)


def _pybuild(tmp_path: Path, *args: str, stdin: bytes | None = None, max_fds: int | None = None,
             env: dict | None = None) -> subprocess.CompletedProcess:
    def limit_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))

    return subprocess.run([sys.executable, "-m", "builder.cli", *args], input=stdin, capture_output=True,
                          timeout=170, cwd=SOURCE, env=pybuild_env(tmp_path, **(env or {})),
                          preexec_fn=limit_fds if max_fds else None)


def _build(tmp_path: Path, root: Path, dockerfile: str, *args: str, files: dict[str, bytes] | None = None,
           **kw) -> subprocess.CompletedProcess:
    context = tmp_path / f"ctx-{len(list(tmp_path.glob('ctx-*')))}"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        (context / name).write_bytes(data)
    return _pybuild(tmp_path, "build", "--root", str(root), "--progress", "plain", *args, str(context), **kw)


def _ok(done: subprocess.CompletedProcess) -> None:
    out = done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) else done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]


def _tar_files(path: Path) -> dict[str, bytes]:
    """Regular files of an exported rootfs tar, by name."""
    with tarfile.open(path) as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar if m.isreg()}


def _depth_below(top: Path) -> int:
    """How many levels of directories `top` holds (an explicit stack: the
    point is trees os.walk cannot take)."""
    deepest = 0
    stack = [(str(top), 0)]
    while stack:
        path, depth = stack.pop()
        deepest = max(deepest, depth)
        with os.scandir(path) as entries:
            stack += [(e.path, depth + 1) for e in entries if e.is_dir(follow_symlinks=False)]
    return deepest


def _snapshots(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root / "snapshots") if not n.startswith("."))


def _assert_root_reclaimable(tmp_path: Path, root: Path) -> None:
    """doctor clean, du, info and prune -a work, and nothing deep stays."""
    for command in (["doctor"], ["du"], ["info"], ["prune", "-a"], ["doctor"]):
        done = _pybuild(tmp_path, *command, "--root", str(root))
        _ok(done)
        if command == ["doctor"]:
            assert done.stdout.decode().strip() == "ok", done.stdout.decode()
    assert _snapshots(root) == []
    assert os.listdir(root / "tmp") == []
    assert _depth_below(root) < 10


def test_a_run_making_a_deep_tree_then_another_run(tmp_path, busybox_image):
    root, out = tmp_path / "root", tmp_path / "out.tar"
    deep = _deep("a")
    # A step that fails after making the tree: its snapshot goes, and the
    # next command finds nothing to reclaim.
    failed = _build(tmp_path, root, f"FROM {busybox_image.ref}\nRUN mkdir -p /{deep} && exit 3\n")
    err = failed.stderr.decode(errors="replace")
    assert failed.returncode == 1 and "exit code: 3" in err and "Traceback" not in err, err[-2000:]
    assert _snapshots(root) != [] and _depth_below(root) < 10
    done = _build(tmp_path, root,
                  f"FROM {busybox_image.ref}\n"
                  f"RUN mkdir -p /{deep} && echo one > /{deep}/f\n"
                  f"RUN cat /{deep}/f > /seen && echo two >> /{deep}/f\n",
                  "-o", f"type=tar,dest={out}")
    _ok(done)
    files = _tar_files(out)
    assert files[f"{deep}/f"] == b"one\ntwo\n" and files["seen"] == b"one\n"
    _assert_root_reclaimable(tmp_path, root)


def test_a_cache_mount_seeded_from_a_deep_stage(tmp_path, busybox_image):
    root, out = tmp_path / "root", tmp_path / "out.tar"
    deep = _deep("s")
    done = _build(tmp_path, root,
                  f"FROM {busybox_image.ref} AS seed\n"
                  f"RUN mkdir -p /seed/{deep} && echo seeded > /seed/{deep}/f\n"
                  f"FROM {busybox_image.ref}\n"
                  f"RUN --mount=type=cache,target=/c,id=deep,from=seed,source=/seed cat /c/{deep}/f > /seen\n",
                  "-o", f"type=tar,dest={out}")
    _ok(done)
    assert _tar_files(out)["seen"] == b"seeded\n"
    _assert_root_reclaimable(tmp_path, root)  # prune -a removes the deep cache mount


def test_a_deep_workdir(tmp_path, busybox_image):
    root, out = tmp_path / "root", tmp_path / "out.tar"
    deep = _deep("w")
    done = _build(tmp_path, root, f"FROM {busybox_image.ref}\nWORKDIR /{deep}\nRUN pwd > here\n",
                  "-o", f"type=tar,dest={out}")
    _ok(done)
    assert _tar_files(out)[f"{deep}/here"] == f"/{deep}\n".encode()
    _assert_root_reclaimable(tmp_path, root)


def _deep_tar(name: str, data: bytes, *, with_dirs: bool = False, extra: dict[str, bytes] | None = None) -> bytes:
    members = [member(_deep(name, depth), tarfile.DIRTYPE, mode=0o755) for depth in range(1, DEPTH + 1)
               ] if with_dirs else []
    members.append(member(f"{_deep(name)}/f", data=data))
    members += [member(key, data=value) for key, value in (extra or {}).items()]
    return layer(*members)


def test_add_of_a_deep_archive(tmp_path, busybox_image):
    # Members without their directories: ADD makes every parent itself.
    root, out = tmp_path / "root", tmp_path / "out.tar"
    done = _build(tmp_path, root, f"FROM {busybox_image.ref}\nADD deep.tar /x/\nRUN cat /x/{_deep('d')}/f > /seen\n",
                  "-o", f"type=tar,dest={out}", files={"deep.tar": _deep_tar("d", b"added\n")})
    _ok(done)
    files = _tar_files(out)
    assert files["seen"] == b"added\n" and files[f"x/{_deep('d')}/f"] == b"added\n"
    _assert_root_reclaimable(tmp_path, root)


def test_a_stdin_context_holding_a_deep_tree(tmp_path, busybox_image):
    # With fewer fds than levels: COPY holds a bounded number.
    root, out = tmp_path / "root", tmp_path / "out.tar"
    context = _deep_tar("c", b"from the context\n",
                        extra={"Dockerfile": f"FROM {busybox_image.ref}\nCOPY c /c\n".encode()})
    done = _pybuild(tmp_path, "build", "--root", str(root), "--progress", "plain", "-o", f"type=tar,dest={out}",
                    "-", stdin=context, max_fds=512)
    _ok(done)
    assert _tar_files(out)[f"c/{_deep('c', DEPTH - 1)}/f"] == b"from the context\n"
    _assert_root_reclaimable(tmp_path, root)


def test_a_base_image_with_a_deep_layer(tmp_path, busybox_image):
    deep = _deep("a")
    ref = hostile.push_image(busybox_image.registry, tmp_path / "layout",
                             [_deep_tar("a", b"deep\n", with_dirs=True)])
    root, out = tmp_path / "root", tmp_path / "run.tar"
    # A tiny GC budget: automatic GC after the build measures the deep
    # snapshots and removes them.
    done = _build(tmp_path, root, f"FROM {ref}\nRUN echo more >> /{deep}/f\n", "-o", f"type=tar,dest={out}",
                  env={"PYBUILD_GC_KEEP_STORAGE": "1MB"})
    _ok(done)
    assert "garbage collection: freed" in done.stderr.decode()
    assert _tar_files(out)[f"{deep}/f"] == b"deep\nmore\n"
    out = tmp_path / "copy.tar"
    done = _build(tmp_path, root, f"FROM {busybox_image.ref}\nCOPY --from={ref} /a /x\n",
                  "-o", f"type=tar,dest={out}", max_fds=512)
    _ok(done)
    assert _tar_files(out)[f"x/{_deep('a', DEPTH - 1)}/f"] == b"deep\n"
    _assert_root_reclaimable(tmp_path, root)


def test_a_deep_member_unpacks_and_exports_with_few_fds(tmp_path, busybox_image):
    # One member 600 directories deep, none of them listed: one fd held
    # per level would need more than the 512 this pybuild may open, and
    # so would the local export's two per level.
    deep = _deep("b", 600)
    ref = hostile.push_image(busybox_image.registry, tmp_path / "layout", [layer(member(f"{deep}/f", data=b"x"))])
    root, out = tmp_path / "root", tmp_path / "out"
    done = _build(tmp_path, root, f"FROM {ref}\nRUN test -f /{deep}/f\n", "-o", f"type=local,dest={out}",
                  max_fds=512)
    _ok(done)
    with open(f"{out}/{deep}/f", "rb") as exported:
        assert exported.read() == b"x"
    _assert_root_reclaimable(tmp_path, root)


def _pax_layer(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _with_pax(info_and_data, records: dict[str, str]):
    info, data = info_and_data
    info.pax_headers = records
    return info, data


def _sparse(name: str, real_size: int, data: bytes):
    """A PAX 0.0 sparse member: `data` at offset 0 of a `real_size` file."""
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.size = len(data)
    info.pax_headers = {"GNU.sparse.major": "0", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                        "GNU.sparse.size": str(real_size), "GNU.sparse.numblocks": "1",
                        "GNU.sparse.offset": "0", "GNU.sparse.numbytes": str(len(data))}
    return info, data


LAYER_REFUSALS = {
    # user.* xattrs are for files and directories: Linux refuses one on a
    # symlink, and a hard link to a symlink member is that symlink
    "xattr-on-a-symlink": (
        [member("s", tarfile.SYMTYPE, link="target"),
         _with_pax(member("h", tarfile.LNKTYPE, link="s"), {"SCHILY.xattr.user.x": "v"})],
        "apply layer: 'h': setxattr user.x: Operation not permitted"),
    "file-too-large": ([_sparse("huge", 2**60, b"data")], "apply layer: 'huge': File too large"),
    "name-too-long": ([member("n" * 300, data=b"x")], f"apply layer: '{'n' * 300}': File name too long"),
}


@pytest.mark.parametrize("case", sorted(LAYER_REFUSALS))
def test_what_the_filesystem_refuses_in_a_layer_is_one_clear_error(tmp_path, busybox_image, case):
    members, message = LAYER_REFUSALS[case]
    ref = hostile.push_image(busybox_image.registry, tmp_path / "layout", [_pax_layer(*members)])
    root = tmp_path / "root"
    done = _build(tmp_path, root, f"FROM {ref}\n")
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("ERROR")] == [f"ERROR: {message}"], err
    _assert_root_reclaimable(tmp_path, root)


def _setxattr_error(tmp_path: Path, key: str, value: bytes) -> int | None:
    probe = tmp_path / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, key, value)
    except OSError as exc:
        return exc.errno
    finally:
        probe.unlink()
    return None


@pytest.mark.parametrize("key", ["bogus.name", "system.posix_acl_access"])
def test_an_xattr_the_filesystem_does_not_support_is_left_out(tmp_path, busybox_image, key):
    # containerd's archive.Apply (BuildKit's layer extraction) warns and
    # goes on when setxattr says ENOTSUP; any other refusal fails the layer.
    refusal = _setxattr_error(tmp_path, key, b"garbage")
    ref = hostile.push_image(busybox_image.registry, tmp_path / "layout", [_pax_layer(
        _with_pax(member("f", data=b"kept\n"), {f"SCHILY.xattr.{key}": "garbage"}))])
    root, out = tmp_path / "root", tmp_path / "out.tar"
    done = _build(tmp_path, root, f"FROM {ref}\n", "-o", f"type=tar,dest={out}")
    err = done.stderr.decode(errors="replace")
    assert "Traceback" not in err
    if refusal == errno.EOPNOTSUPP:
        _ok(done)
        assert _tar_files(out)["f"] == b"kept\n"
    else:
        assert refusal is not None, "the filesystem took a garbage xattr"
        assert done.returncode == 1
        assert f"ERROR: apply layer: 'f': setxattr {key}: {os.strerror(refusal)}" in err, err
    _assert_root_reclaimable(tmp_path, root)
