"""`--cache-to ...,cache-mounts=true` reads a live directory: the cache
mount another build's RUN may be writing meanwhile (same root, same cache
id). That build can swap any directory of it for a symlink to the host, or
a file for a device node, between two calls of the exporter. Found by a
red-team session: host files' bytes ended up in the exported cache, or the
export failed with an error naming a host path.

runtime.layer.write_layer(live=True) must never read outside the tree,
never open a non-regular file for reading, leave out what changed (as tar
does) and name entries by their path in the layer. The swaps are made at a
fixed point of the walk (when it first hands bytes to its output, while it
streams a big file) and, separately, by a process racing it. The victims are
files under tmp_path."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from builder.build import build
from builder.ops.cachemount import cache_mount_dir, held_for_export
from frontend.ops import MountSpec, MountType, Sharing
from runtime.layer import TreeChanged, write_layer

VICTIM = b"HOST-VICTIM-" * 40
REPO = Path(__file__).resolve().parents[2]


class Sink:
    """A layer's destination that calls `hook` when write_layer first hands
    it bytes: once it has listed the root, while it streams `a/big`."""

    def __init__(self, hook=None):
        self.hook = hook
        self.chunks: list[bytes] = []

    def write(self, data) -> int:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def value(self) -> bytes:
        return b"".join(self.chunks)


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture
def victim(tmp_path):
    """A host directory with a file and a subdirectory; unchanged at the end."""
    top = tmp_path / "victim"
    (top / "sub").mkdir(parents=True)
    (top / "secret").write_bytes(VICTIM)
    (top / "sub" / "x").write_bytes(VICTIM)
    yield top
    assert (top / "secret").read_bytes() == VICTIM and (top / "sub" / "x").read_bytes() == VICTIM
    assert sorted(p.name for p in top.iterdir()) == ["secret", "sub"]


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "cache"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "big").write_bytes(b"a" * 200_000)  # streamed: the first write
    (tree / "b" / "sub").mkdir(parents=True)
    (tree / "b" / "secret").write_bytes(b"cache data")
    (tree / "b" / "sub" / "x").write_bytes(b"cache data")
    (tree / "f").write_bytes(b"F" * 100)
    (tree / "g").write_bytes(b"G" * 100)
    return tree


def _swap(tree: Path, victim: Path):
    def hook():
        os.rename(tree / "b", tree / "b.old")
        os.symlink(victim, tree / "b")  # a directory becomes a symlink to the host
        os.unlink(tree / "f")
        os.symlink(victim / "secret", tree / "f")  # a file too
        os.unlink(tree / "g")
        os.mknod(tree / "g", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # a file becomes a device
    return hook


def test_swapped_entries_of_a_live_tree_are_left_out_never_followed(tmp_path, victim):
    tree = _tree(tmp_path)
    sink = Sink(_swap(tree, victim))
    left_out = write_layer(tree, sink, live=True)
    data = sink.value()
    assert VICTIM[:24] not in data
    assert sorted(members(data)) == ["a", "a/big"]
    assert left_out == 3


def test_swapped_entries_of_a_still_tree_fail_naming_the_layer_path(tmp_path, victim):
    tree = _tree(tmp_path)
    sink = Sink(_swap(tree, victim))
    with pytest.raises(TreeChanged) as failure:
        write_layer(tree, sink)
    assert str(failure.value).startswith("write layer: /b changed while the layer was written")
    assert str(tmp_path) not in str(failure.value)
    assert VICTIM[:24] not in sink.value()


# A walk holding fewer directory fds than the tree is deep closes its
# shallowest ones and reopens them from the root, name by name, checking
# each is still the directory it was. Run in a child whose RLIMIT_NOFILE is
# low, so that the walk must do so (it holds a quarter of the limit).
_CHILD = """
import json, os, resource, sys
sys.path.insert(0, sys.argv[1])
from runtime.layer import write_layer
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))
tree, out, swap, victim = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]

class Sink:
    def __init__(self, handle):
        self.handle, self.swapped = handle, not swap
    def write(self, data):
        if not self.swapped:
            self.swapped = True
            os.rename(os.path.join(tree, "x1"), os.path.join(tree, "x1.old"))
            if swap == "symlink":
                os.symlink(victim, os.path.join(tree, "x1"))
            else:  # another directory with the same names
                os.makedirs(os.path.join(tree, "x1", "z"))
                with open(os.path.join(tree, "x1", "z", "secret"), "wb") as f:
                    f.write(b"other directory")
        return self.handle.write(data)
    def flush(self):
        pass

with open(out, "wb") as handle:
    left_out = write_layer(tree, Sink(handle), live=True)
print(json.dumps({"left_out": left_out}))
"""


def _run_child(tmp_path: Path, tree: Path, nofile: int, swap: str = "", victim: Path | None = None) -> tuple[bytes, int]:
    out = tmp_path / "child.tar"
    result = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), str(nofile), str(tree), str(out), swap,
                             str(victim or "")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    out.unlink()
    return data, json.loads(result.stdout)["left_out"]


@pytest.mark.parametrize("swap", ["symlink", "directory"])
def test_a_closed_ancestor_swapped_meanwhile_is_not_reopened(tmp_path, victim, swap):
    tree = tmp_path / "tree"
    deep = tree.joinpath("x1", *(f"x{n}" for n in range(2, 60)))
    deep.mkdir(parents=True)
    (deep / "big").write_bytes(b"b" * 200_000)
    (tree / "x1" / "z").mkdir()
    (tree / "x1" / "z" / "secret").write_bytes(b"cache data")
    victim.joinpath("z").mkdir()
    victim.joinpath("z", "secret").write_bytes(VICTIM)
    try:
        data, left_out = _run_child(tmp_path, tree, 64, swap, victim)
    finally:
        (victim / "z" / "secret").unlink()
        (victim / "z").rmdir()
    names = members(data)
    assert VICTIM[:24] not in data and b"other directory" not in data
    assert "x1/" + "/".join(f"x{n}" for n in range(2, 60)) + "/big" in names
    assert not any(name.startswith("x1/z") for name in names)
    assert left_out == 1


def _make_deep(top: Path, depth: int) -> None:
    """top/d/d/.../d, `depth` levels, a file `zz` beside each `d` (so that
    every level still has an entry to write once its subdirectory is done).
    Made through fds: the path is longer than PATH_MAX."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            file_fd = os.open("zz", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(file_fd, b"%d" % level)
            os.close(file_fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _remove_deep(top: Path) -> None:
    """rm -rf of what _make_deep made, bottom up through one fd at a time."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while "d" in os.listdir(fd):
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd, depth = child, depth + 1
        while True:
            for name in os.listdir(fd):
                os.unlink(name, dir_fd=fd)
            if depth == 0:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, depth = parent, depth - 1
            os.rmdir("d", dir_fd=fd)
    finally:
        os.close(fd)
    top.rmdir()


def test_a_tree_5000_deep_is_written_whole_within_its_fd_budget(tmp_path):
    top = tmp_path / "deep"
    _make_deep(top, 5000)
    try:
        sink = Sink()
        write_layer(top, sink)
        data = sink.value()
        names = members(data)
        assert len(names) == 10_000
        assert "/".join(["d"] * 5000) in names and "/".join(["d"] * 4999) + "/zz" in names
        # 256 open files: a budget of 64 directory fds, so the walk reopens
        # its ancestors from the root about 80 times; the bytes are the same.
        bounded, left_out = _run_child(tmp_path, top, 256)
        assert bounded == data and left_out == 0
    finally:
        _remove_deep(top)


# A process racing the walk, as a RUN of another build would: it keeps
# swapping each directory d<i> for a symlink l<i> to the victim and back.
_FLIPPER = """
import os, sys, time
tree, count = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    for i in range(count):
        d, t, l = (os.path.join(tree, f"{p}{i}") for p in "dtl")
        os.rename(d, t)
        os.rename(l, d)
        os.rename(d, l)
        os.rename(t, d)
"""


def test_a_racing_writer_never_gets_host_bytes_into_the_layer(tmp_path, victim):
    tree = tmp_path / "cache"
    count = 40
    for i in range(count):
        (tree / f"d{i}").mkdir(parents=True)
        (tree / f"d{i}" / "secret").write_bytes(bytes(90))
        os.symlink(victim, tree / f"l{i}")
    flipper = subprocess.Popen([sys.executable, "-c", _FLIPPER, str(tree), str(count)], stdout=subprocess.PIPE)
    runs = left_out = 0
    try:
        assert flipper.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            sink = Sink()
            left_out += write_layer(tree, sink, live=True)
            data = sink.value()
            assert VICTIM[:24] not in data
            members(data)  # a well-formed archive every time
            runs += 1
    finally:
        flipper.kill()
        flipper.wait()
        flipper.stdout.close()
    assert runs > 10 and left_out > 0  # the race did happen


def test_an_export_waits_for_a_locked_step_of_another_build(tmp_path):
    base = tmp_path / "cachemounts"
    spec = MountSpec(MountType.CACHE, "/c", cache_id="pkgs", sharing=Sharing.LOCKED)
    waiting, exported = threading.Event(), threading.Event()

    def export(path):
        with held_for_export(path, waiting.set):
            exported.set()

    with cache_mount_dir(base, spec) as path:  # what a running `locked` step holds
        thread = threading.Thread(target=export, args=(path,))
        thread.start()
        assert waiting.wait(10)
        time.sleep(0.3)
        assert not exported.is_set()
    thread.join(10)
    assert exported.is_set() and not thread.is_alive()


def test_an_exported_cache_mount_holds_the_host_symlinks_a_step_made_not_their_targets(
        tmp_path, busybox_image, victim):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {busybox_image.ref}\n"
        "RUN --mount=type=cache,target=/c sh -c '"
        f"ln -s {victim} /c/dirlink && ln -s {victim}/secret /c/filelink && "
        "mkdir -p /c/d && echo cached > /c/d/f'\n")
    dest = tmp_path / "exported"
    build(context, root=tmp_path / "root", cache_to=[f"type=local,dest={dest},cache-mounts=true"])
    mount_layers = []
    for blob in (dest / "blobs" / "sha256").iterdir():
        data = blob.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        assert VICTIM[:24] not in data, blob.name
        if b"dirlink" in data:
            mount_layers.append(members(data))
    (names,) = mount_layers
    assert names["dirlink"].issym() and names["dirlink"].linkname == str(victim)
    assert names["filelink"].issym() and names["filelink"].linkname == f"{victim}/secret"
    assert names["d/f"].isfile() and names["d/f"].size == len("cached\n")
