"""The scenarios: contexts generated at run time, and what is timed.

Every scenario function gets the run (`Bench`), a builder and the repetition
number, and returns {measure name: Sample}. Set-up builds that are not the
thing being measured are run through the same code but not reported.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import measure
from bench.builders import PYBUILD, pybuild_env
from bench.env import CACHE_DIR, remove_registry, start_registry

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    ctx_tiny: int  # tiny files in the big context
    ctx_big: int  # 1 MB files in the big context
    layer_files: int  # files written by the big-layer RUN
    layer_file_bytes: int
    cache_mount_bytes: int
    parser_lines: int


FULL = Sizes(ctx_tiny=19_750, ctx_big=250, layer_files=10_000, layer_file_bytes=100_000,
             cache_mount_bytes=200_000_000, parser_lines=10_000)
SMOKE = Sizes(ctx_tiny=200, ctx_big=3, layer_files=50, layer_file_bytes=10_000,
              cache_mount_bytes=1_000_000, parser_lines=200)

SCENARIOS = {
    "1": "small multi-stage",
    "2": "big context (COPY . + RUN)",
    "3": "big layer (RUN writes many files)",
    "4": "cache mount",
    "5": "realistic app on Debian",
    "6": "push",
    "7": "parser (10,000 lines)",
}
# Measures, in table order, and the target ratio pybuild/docker for each.
TARGETS = {
    ("1", "cold"): 1.0, ("1", "no-op"): 1.0,
    ("2", "cold"): 1.0, ("2", "no-op"): 0.5, ("2", "one file changed"): 0.3,
    ("3", "cold"): 1.0,
    ("4", "re-run after ARG change"): 1.0,
    ("5", "cold"): 1.0, ("5", "source change"): 1.0,
    ("6", "first push"): 1.0, ("6", "push after one-layer change"): 1.0,
    ("7", "check"): None,
}
PYBUILD_ONLY = {"7"}


class Bench:
    """Shared state of one harness run."""

    def __init__(self, work: Path, sizes: Sizes, registry_host: str, debian_ref: str | None, log: Path):
        self.work, self.sizes, self.host, self.debian, self.log = work, sizes, registry_host, debian_ref, log
        self.contexts = work / "contexts"
        self._made: set[str] = set()
        self._change = 0
        # (uid, gid) the contexts are given to, when a rootless builder runs:
        # a user builds a context of its own.
        self.owner: tuple[int, int] | None = None

    @property
    def busybox(self) -> str:
        return f"{self.host}/busybox:latest"

    def context(self, name: str, make) -> Path:
        path = self.contexts / name
        if name not in self._made:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            make(path)
            if self.owner is not None:
                _give(path, self.owner)
            self._made.add(name)
        return path

    def change_token(self, builder: str) -> str:
        self._change += 1
        return f"{builder}-{self._change}"


def _give(path: Path, owner: tuple[int, int]) -> None:
    for directory, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(directory, name), *owner)
    os.lchown(path, *owner)


def _required(sample: measure.Sample, what: str) -> measure.Sample:
    if not sample.ok:
        raise RuntimeError(f"{what} failed: {sample.note}")
    return sample


# 1 -----------------------------------------------------------------------------

def _make_small(path: Path) -> None:
    shutil.copytree(REPO / "testdata/hello", path, dirs_exist_ok=True)


def small_multistage(bench: Bench, builder, rep: int) -> dict:
    ctx = bench.context("small", _make_small)
    args = {"BASE": bench.busybox}
    builder.cold()
    cold = _required(builder.build(ctx, "bench-small", args), "small cold build")
    noop = builder.build(ctx, "bench-small", args)
    return {"cold": cold, "no-op": noop}


# 2 and 6 -------------------------------------------------------------------------

BIG_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY . /app
RUN find /app -type f | wc -l > /app-files.txt
"""


def _make_big(sizes: Sizes):
    def make(path: Path) -> None:
        rng = random.Random(8)
        (path / "Dockerfile").write_text(BIG_DOCKERFILE)
        text = (b"lorem ipsum dolor sit amet, consectetur adipiscing elit; " * 40)
        for i in range(sizes.ctx_tiny):
            d = path / f"src/pkg{i % 200:03d}/mod{i % 7}"
            d.mkdir(parents=True, exist_ok=True)
            n = rng.randint(100, 4900)
            body = text[:n // 2] + rng.randbytes(n - n // 2)
            (d / f"file{i:05d}.txt").write_bytes(body)
        for i in range(sizes.ctx_big):
            d = path / f"assets/{i % 10}"
            d.mkdir(parents=True, exist_ok=True)
            # Half incompressible, half repetitive: gzip does real work on both.
            body = rng.randbytes(1 << 19) + (text * 300)[: 1 << 19]
            (d / f"blob{i:03d}.bin").write_bytes(body)
    return make


def _touch_one(ctx: Path, token: str) -> None:
    (ctx / "src/pkg000/mod0/file00000.txt").write_text(f"changed {token}\n")


def big_context(bench: Bench, builder, rep: int, *, timed: bool = True, push: bool = False) -> dict:
    ctx = bench.context("big", _make_big(bench.sizes))
    args = {"BASE": bench.busybox}
    out = {}
    builder.cold()
    out["cold"] = _required(builder.build(ctx, "bench-big", args), "big context cold build")
    if timed:
        out["no-op"] = builder.build(ctx, "bench-big", args)
        _touch_one(ctx, bench.change_token(builder.name))
        out["one file changed"] = builder.build(ctx, "bench-big", args)
    if push:
        out.update(_push(bench, builder, ctx, args))
    if not timed:
        out.pop("cold")
    return out


def _push(bench: Bench, builder, ctx: Path, args: dict) -> dict:
    """First push of the image to an empty registry, then a push after a
    change to one file of the context (the COPY layer and the small RUN
    layer change; the base layer is already there)."""
    registry = start_registry(bench.work / f"push-registry-{builder.name}")
    try:
        ref = f"{registry.host}/bench/big:1"
        builder.tag("bench-big", ref)
        first = builder.push(ref)
        _touch_one(ctx, bench.change_token(builder.name))
        _required(builder.build(ctx, "bench-big", args), "big context rebuild before push")
        builder.tag("bench-big", ref)
        second = builder.push(ref)
    finally:
        remove_registry(registry)
    return {"first push": first, "push after one-layer change": second}


def push_only(bench: Bench, builder, rep: int) -> dict:
    return big_context(bench, builder, rep, timed=False, push=True)


# 3 -----------------------------------------------------------------------------

def big_layer(bench: Bench, builder, rep: int) -> dict:
    s = bench.sizes

    def make(path: Path) -> None:
        (path / "Dockerfile").write_text(
            "ARG BASE\nFROM ${BASE}\n"
            f"RUN mkdir /data && i=0; while [ $i -lt {s.layer_files} ]; do "
            f"head -c {s.layer_file_bytes} /dev/urandom > /data/f$i; i=$((i+1)); done\n")

    ctx = bench.context("biglayer", make)
    builder.cold()
    return {"cold": builder.build(ctx, "bench-biglayer", {"BASE": bench.busybox})}


# 4 -----------------------------------------------------------------------------

def cache_mount(bench: Bench, builder, rep: int) -> dict:
    size = bench.sizes.cache_mount_bytes

    def make(path: Path) -> None:
        (path / "Dockerfile").write_text(
            "ARG BASE\nFROM ${BASE}\nARG V=0\n"
            "RUN --mount=type=cache,target=/cache,id=bench-cache "
            f"if [ ! -f /cache/blob ]; then head -c {size} /dev/urandom > /cache/blob; echo filled > /filled; fi; "
            "md5sum /cache/blob > /sum && echo \"$V\" >> /sum\n")

    ctx = bench.context("cachemount", make)
    builder.cold()
    _required(builder.build(ctx, "bench-cachemount", {"BASE": bench.busybox, "V": "setup"}), "cache mount set-up")
    return {"re-run after ARG change": builder.build(
        ctx, "bench-cachemount", {"BASE": bench.busybox, "V": bench.change_token(builder.name)})}


# 5 -----------------------------------------------------------------------------

APP_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
    rm -f /etc/apt/apt.conf.d/docker-clean && \\
    echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > /etc/apt/apt.conf.d/keep-cache && \\
    apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-pip
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=bind,source=wheels,target=/wheels \\
    --mount=type=cache,target=/root/.cache/pip \\
    pip install --break-system-packages --no-index --find-links /wheels -r requirements.txt
COPY src/ ./src/
RUN python3 -m compileall -q src && python3 -c "import flask, requests; print('ok')"
CMD ["python3", "-m", "src.app"]
"""


def _make_app(path: Path) -> None:
    (path / "Dockerfile").write_text(APP_DOCKERFILE)
    (path / "requirements.txt").write_text("flask==3.0.3\nrequests==2.32.3\n")
    wheels = CACHE_DIR / "wheels"
    if not wheels.is_dir() or not any(wheels.iterdir()):
        raise RuntimeError(f"no wheels in {wheels}: see docs/benchmarks.md (pip download ...)")
    shutil.copytree(wheels, path / "wheels")
    src = path / "src"
    src.mkdir()
    (src / "__init__.py").write_text("")
    for i in range(50):
        (src / f"mod{i:02d}.py").write_text(
            "".join(f"def f{j}(x):\n    return x * {j} + {i}\n\n" for j in range(40)))
    (src / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")


def realistic_app(bench: Bench, builder, rep: int) -> dict:
    if bench.debian is None:
        raise RuntimeError("no Debian base image (debootstrap failed or skipped)")
    ctx = bench.context("app", _make_app)
    args = {"BASE": bench.debian}
    builder.cold()
    cold = _required(builder.build(ctx, "bench-app", args), "realistic app cold build")
    (ctx / "src/mod00.py").write_text(f"# {bench.change_token(builder.name)}\nVALUE = 1\n")
    return {"cold": cold, "source change": builder.build(ctx, "bench-app", args)}


# 7 -----------------------------------------------------------------------------

def _parser_dockerfile(lines: int) -> str:
    out = ["# syntax=docker/dockerfile:1", "ARG BASE=busybox", "FROM ${BASE} AS base"]
    i = 0
    while len(out) < lines:
        k = i % 8
        if k == 0:
            out.append(f"ENV VAR{i}=value{i} OTHER{i}=\"quoted value {i}\"")
        elif k == 1:
            out.append(f"RUN echo step {i} && mkdir -p /opt/s{i} && \\")
            out.append(f"    touch /opt/s{i}/done")
        elif k == 2:
            out.append(f"COPY --chown=1000:1000 src/{i}/ /app/{i}/")
        elif k == 3:
            out.append(f"LABEL org.example.step{i}=\"{i}\"")
        elif k == 4:
            out.append(f"ARG A{i}=default{i}")
        elif k == 5:
            out.append(f"RUN --mount=type=cache,target=/root/.cache/c{i} echo ${{A{i - 1}}} $VAR{i - 5}")
        elif k == 6:
            out.append(f"WORKDIR /work/{i}")
        else:
            out.append(f"FROM base AS stage{i}" if i % 800 == 7 else f"USER {1000 + i % 3}")
        i += 1
    return "\n".join(out[:lines]) + "\n"


def parser(bench: Bench, builder, rep: int) -> dict:
    def make(path: Path) -> None:
        (path / "Dockerfile").write_text(_parser_dockerfile(bench.sizes.parser_lines))

    ctx = bench.context("parser", make)
    # The command a user runs: parse, lint and convert, imports included.
    return {"check": measure.run([PYBUILD, "check", str(ctx)], log=bench.log, cwd=REPO, env=pybuild_env())}


RUNNERS = {"1": small_multistage, "2": big_context, "3": big_layer, "4": cache_mount,
           "5": realistic_app, "6": push_only, "7": parser}


def scenario_of(key: str, measure: str) -> str:
    """Scenario 6's pushes run inside scenario 2 when both are selected."""
    return "6" if "push" in measure else key


def run_scenario(bench: Bench, key: str, builder, rep: int, selected: set[str]) -> dict:
    if key == "2" and "6" in selected:
        return big_context(bench, builder, rep, push=True)
    return RUNNERS[key](bench, builder, rep)


def ensure_wheels() -> None:
    """The wheels scenario 5 installs (offline, from the context), fetched once."""
    wheels = CACHE_DIR / "wheels"
    if wheels.is_dir() and any(wheels.iterdir()):
        return
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
                    "--platform", "manylinux2014_x86_64", "--implementation", "cp", "-d", str(wheels),
                    "flask==3.0.3", "requests==2.32.3"], check=True)
