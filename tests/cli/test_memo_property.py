"""The no-op memo is never wrong: between builds, random sequences of what
people (and tools) do to a context; after each, the console script's answer
(memo or not) must be the image ID a build without the memo gives.

Each example has its own root, its own base tag in the session registry and
a context reached through a symlink (`cur -> v1`) whose versions share one
Dockerfile (a hard link, as `cp -al` release trees do), so repointing `cur`
changes nothing about the Dockerfile's own lstat.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from builder.root.memo import NO_MEMO_ENV
from cli_helpers import Cli
from fixtures import busybox
from fixtures.pybuild import pybuild_env

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY app/ /app/
COPY link.txt /link.txt
COPY *.txt /txt/
LABEL v=1
"""
# Every rewrite keeps a file's size, and puts its mtime back.
FILES = ("a.txt", "b.txt", "c.txt", "app1/x.txt", "app2/x.txt")
MUTATIONS = ("nothing", "swap context", "swap entry symlink", "swap directory symlink", "rewrite same size",
             "rename over", "delete and recreate", "dockerignore", "dockerfile", "move base tag",
             "move base tag and pull")
_examples = itertools.count()


@pytest.fixture(scope="module")
def other_base(tmp_path_factory) -> Path:
    """A second base image layout: busybox and one more layer."""
    import io
    import tarfile

    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = b"moved\n"
        info = tarfile.TarInfo("etc/moved")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    layout = tmp_path_factory.mktemp("other-base")
    image = busybox.write_image(layout, [busybox.busybox_layer_tar(), extra.getvalue()], arch=busybox.host_arch())
    busybox.write_index(layout, busybox.OCI_MANIFEST, image.manifest, image.manifest_size, "latest")
    return layout


class Example:
    """One context, root and base tag, and the two ways to build them."""

    def __init__(self, where: Path, base_layouts: tuple[Path, Path], registry_host: str):
        self.where = where
        self.layouts = base_layouts
        self.base = f"{registry_host}/memo-property-{where.name}:latest"
        self.on_base = 0
        self.cli = Cli(where / "root", pybuild_env(where))
        self.history: list[str] = []
        busybox.skopeo_push(self.layouts[0], "latest", self.base)
        shared = where / "Dockerfile.shared"
        shared.write_text(DOCKERFILE)
        for version in ("v1", "v2"):
            ctx = where / version
            ctx.mkdir()
            os.link(shared, ctx / "Dockerfile")
            (ctx / "a.txt").write_text(f"alpha-{version[1]}\n")
            (ctx / "b.txt").write_text("bravo-0\n")
            (ctx / "c.txt").write_text("charlie-0\n")
            for sub in ("app1", "app2"):
                (ctx / sub).mkdir()
                (ctx / sub / "x.txt").write_text(f"{sub}-x-0\n")
            os.symlink("app1", ctx / "app")
            os.symlink("a.txt", ctx / "link.txt")
        os.symlink("v1", where / "cur")

    @property
    def context(self) -> Path:
        return self.where / os.readlink(self.where / "cur")

    def build(self, *extra: str, memo: bool = True) -> tuple[str, bool]:
        """The image ID, and whether the memo answered (a full build makes
        and removes its scratch directory in ROOT/tmp; a replay never does)."""
        scratch = self.cli.root / "tmp"
        before = _times(scratch)
        done = self.cli.build("-q", "--build-arg", f"BASE={self.base}", *extra, str(self.where / "cur"),
                              env={} if memo else {NO_MEMO_ENV: "1"})
        assert done.returncode == 0, f"{self.history}: {done.stderr.decode()}"
        assert done.stderr == b""
        return done.stdout.decode().strip(), before is not None and _times(scratch) == before

    def rewrite(self, path: Path, how: str) -> None:
        old = path.stat()
        text = path.read_text()
        new = text[:-2] + str((int(text[-2]) + 1) % 10) + "\n"  # same size, other bytes
        if how == "rewrite same size":
            path.write_text(new)
        elif how == "rename over":
            tmp = path.with_name(path.name + ".new")
            tmp.write_text(new)
            os.utime(tmp, ns=(old.st_atime_ns, old.st_mtime_ns))
            os.rename(tmp, path)
        else:  # delete and recreate: the freed inode number is likely reused
            path.unlink()
            path.write_text(new)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))

    def mutate(self, what: str, pick_file: Callable[[], str]) -> None:
        ctx = self.context
        if what == "swap context":
            _repoint(self.where / "cur", "v2" if ctx.name == "v1" else "v1")
        elif what == "swap entry symlink":
            _repoint(ctx / "link.txt", "/b.txt" if os.readlink(ctx / "link.txt") == "a.txt" else "a.txt")
        elif what == "swap directory symlink":
            _repoint(ctx / "app", "app2" if os.readlink(ctx / "app") == "app1" else "app1")
        elif what in ("rewrite same size", "rename over", "delete and recreate"):
            name = pick_file()
            self.history[-1] += f" {name}"
            self.rewrite(ctx / name, what)
        elif what == "dockerignore":
            ignore = ctx / ".dockerignore"
            if ignore.exists():
                ignore.unlink()
            else:
                ignore.write_text("c.txt\n")
        elif what == "dockerfile":
            path = ctx / "Dockerfile"
            old = path.stat()
            text = path.read_text()
            path.write_text(text.replace("v=1", "v=2") if "v=1" in text else text.replace("v=2", "v=1"))
            os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
        elif what.startswith("move base tag"):
            self.on_base = 1 - self.on_base
            busybox.skopeo_push(self.layouts[self.on_base], "latest", self.base)
            if what.endswith("pull"):
                self.build("--pull")  # never memoised: it resolves the tag again


def _repoint(link: Path, target: str) -> None:
    """Replace a symlink atomically, as deploy tools do (ln -sfn + mv -T)."""
    tmp = link.with_name(link.name + ".tmp")
    os.symlink(target, tmp)
    os.rename(tmp, link)


def _times(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns


def _builds_agree(tmp_path, busybox_image, other_base, steps, pick_file: Callable[[], str]) -> list[str]:
    """Runs `steps` on a fresh example, checking after each that the memo
    answers what a full build gives; returns the first image ID and the
    full build's after each step."""
    where = tmp_path / f"example-{next(_examples)}"
    where.mkdir()
    example = Example(where, (busybox_image.layout, other_base), busybox_image.registry.host)
    time.sleep(0.3)  # settled: the first build may write its memo
    first, _ = example.build()
    again, replayed = example.build()
    assert again == first and replayed, "an unchanged context is answered from the memo"
    images = [first]
    for what in steps:
        example.history.append(what)
        example.mutate(what, pick_file)
        memod, replayed = example.build()
        full, _ = example.build(memo=False)
        assert memod == full, f"after {example.history}: the memo answered {memod}, a full build gives {full}"
        if what in ("nothing", "move base tag"):
            assert replayed, f"after {example.history}: nothing the build reads changed"
        # The memo written now (the change has settled) is the one the next step must doubt.
        settled, _ = example.build()
        assert settled == full, example.history
        images.append(full)
    return images


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.sampled_from(MUTATIONS), min_size=2, max_size=5), data=st.data())
def test_a_memod_build_gives_the_image_a_full_build_gives(tmp_path, busybox_image, other_base, steps, data):
    _builds_agree(tmp_path, busybox_image, other_base, steps,
                  lambda: data.draw(st.sampled_from(FILES), label="file"))


# A file each rewrite reaches by another way: by name, pattern and the
# link.txt symlink; through the app -> app1 directory symlink; by pattern.
REWRITTEN = {"rewrite same size": "a.txt", "rename over": "app1/x.txt", "delete and recreate": "b.txt"}


@pytest.mark.parametrize("what", MUTATIONS)
def test_each_mutation_alone(tmp_path, busybox_image, other_base, what):
    """Every mutation every run (the random sequences reach each only in
    some): one step from the fresh context, which changes the image unless
    it changes nothing the build reads."""
    first, full = _builds_agree(tmp_path, busybox_image, other_base, [what],
                                lambda: REWRITTEN[what])
    assert (full == first) == (what in ("nothing", "move base tag")), f"{what}: {first} -> {full}"


def test_moving_the_context_symlink_is_seen(tmp_path, busybox_image, other_base):
    """The issue's case, step by step: `cur -> v1` repointed to `v2`."""
    where = tmp_path / "example"
    where.mkdir()
    example = Example(where, (busybox_image.layout, other_base), busybox_image.registry.host)
    time.sleep(0.3)
    v1, _ = example.build()
    _, replayed = example.build()
    assert replayed
    _repoint(where / "cur", "v2")
    memod, replayed = example.build()
    assert not replayed and memod != v1
    assert memod == example.build(memo=False)[0]
