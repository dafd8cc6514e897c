"""Issue 17's numbers: two platforms built together against each alone, and
what an emulated RUN costs against the same RUN native.

    python3 -m bench.multiplatform [--reps 5] [--builders pybuild,docker26] [--smoke]

The Dockerfile is the cross-compilation pattern with CPU work in both
stages: a `--platform=$BUILDPLATFORM` stage (native, shared by both
targets) and a final stage whose RUN does the same work on each target's
platform, natively for linux/amd64 and through qemu-user-static for
linux/arm64 (`seq | gzip | md5sum` in busybox). Each builder builds it cold
three ways per repetition: amd64 alone, arm64 alone, and both at once; the
order of the three and of the builders changes from one repetition to the
next. Every build runs with `--progress rawjson`, from which the RUN steps'
own times (started to completed) and the number of times the shared stage
ran are read.

Builders:
- `pybuild`: this tree's, a new `--root` per build, `-t` into its store.
- `docker26`: docker 26.1 (BuildKit 0.13) with buildx 0.13 on the
  containerd image store (tests/fixtures/docker26.py says why that store),
  a new daemon on a new data root per build, `buildx build -t` into its
  store. Its CPU is the daemon tree's (dockerd, containerd, runc, qemu)
  plus the client's.

Results: bench/results/multiplatform-STAMP.json (every sample, the load
average around the run) and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import env, measure
from bench.measure import load_averages, save_report, spread
from bench.builders import PYBUILD, pybuild_env

import pytest  # noqa: E402 (the fixtures' missing-tool exception)
from fixtures import busybox  # noqa: E402 (bench.env put tests/ on the path)
from fixtures.docker26 import (buildx_plugin, rawjson_statuses, ran_steps, start_docker26,  # noqa: E402
                               stop_docker26)
from fixtures.tools import trixie_tool  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DOCKERFILE = """\
FROM --platform=$BUILDPLATFORM {base} AS tool
RUN seq 1 {tool} | gzip -6 | md5sum > /tool
FROM {base}
COPY --from=tool /tool /tool
RUN seq 1 {work} | gzip -6 | md5sum > /work
"""
FULL = {"tool": 300_000, "work": 1_000_000}
SMOKE = {"tool": 1_000, "work": 2_000}
CASES = {"amd64 alone": "linux/amd64", "arm64 alone": "linux/arm64", "both": "linux/amd64,linux/arm64"}
TARGET = 1.1  # issue 17: both together within 1.1x of the slower alone


class Pybuild:
    name = "pybuild"

    def __init__(self, work: Path):
        self.work = work
        self._n = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def version(self) -> str:
        return measure.quiet([PYBUILD, "version"], env=pybuild_env()).stdout.decode().strip()

    def build(self, context: Path, platforms: str, tag: str, log: Path) -> measure.Sample:
        # A new root: cold. The old ones stay until the run ends (bench.env.retire).
        self._n += 1
        return measure.run([PYBUILD, "build", "--root", str(self.work / f"pybuild-root-{self._n}"),
                            "--progress", "rawjson", "--platform", platforms, "-t", tag, str(context)],
                           log=log, env=pybuild_env())


class Docker26:
    name = "docker26"

    def __init__(self, work: Path):
        self.work = work
        self.daemon = None

    def start(self) -> None:
        try:
            self.dockerd, self.buildx = trixie_tool("dockerd26"), buildx_plugin()
        except pytest.skip.Exception as missing:
            raise RuntimeError(str(missing)) from None
        self._new_daemon()

    def _new_daemon(self) -> None:
        if self.daemon is not None:
            stop_docker26(self.daemon)
        self.daemon = start_docker26(self.dockerd, self.buildx)

    def stop(self) -> None:
        if self.daemon is not None:
            stop_docker26(self.daemon)
            self.daemon = None

    def version(self) -> str:
        server = self.daemon.run("version", "--format", "{{.Server.Version}}").stdout.strip()
        buildx = self.daemon.run("buildx", "version").stdout.strip()
        return f"dockerd {server}, containerd image store; {buildx}"

    def build(self, context: Path, platforms: str, tag: str, log: Path) -> measure.Sample:
        self._new_daemon()  # cold: no image, no build cache
        return measure.run([*self.daemon.argv, "buildx", "build", "--network", "host", "--provenance=false",
                            "--progress", "rawjson", "--platform", platforms, "-t", tag, str(context)],
                           log=log, env=self.daemon.env, daemon_pid=self.daemon.daemon.pid)


BUILDERS = {"pybuild": Pybuild, "docker26": Docker26}


def refusals(context: Path) -> dict[str, str]:
    """What docker 26 on its default graph driver answers to a two-platform
    build, through buildx and through the 20.10 client's own `docker build`
    (which docker 20.10's daemon answers the same way): the last line of
    each error."""
    daemon = start_docker26(trixie_tool("dockerd26"))
    try:
        (daemon.home / "config" / "cli-plugins").mkdir(parents=True)
        os.symlink(buildx_plugin(), daemon.home / "config" / "cli-plugins" / "docker-buildx")
        answers = {}
        for name, command in (("buildx build", ["buildx", "build"]), ("docker build (20.10 client)", ["build"])):
            done = daemon.run(*command, "--network", "host", "--platform", CASES["both"], str(context), check=False)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            answers[name] = f"exit {done.returncode}: {' '.join(lines[-3:]) if lines else ''}"
        return answers
    finally:
        stop_docker26(daemon)


def _time(stamp: str) -> datetime.datetime:
    # RFC 3339 with up to nanoseconds (BuildKit's); Python takes microseconds.
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}")


def steps(log_text: str, platforms: str) -> dict:
    """From a build's rawjson progress: the seconds each platform's final
    RUN took, and how many times the shared stage's RUN ran and for how long."""
    ran = ran_steps(rawjson_statuses(log_text), "RUN seq")
    single = platforms.split("/")[-1] if "," not in platforms else None
    work, tool = {}, []
    for status in ran.values():
        seconds = (_time(status["completed"]) - _time(status["started"])).total_seconds()
        if "> /tool" in status["name"]:
            tool.append(seconds)
            continue
        arch = single or status["name"].split()[0].lstrip("[").split("/")[-1]
        work[arch] = seconds
    return {"run_s": work, "shared_runs": len(tool), "shared_run_s": tool}


def _push_busybox_index(registry, work: Path) -> str:
    layout = work / "busybox-index-layout"
    busybox.build_multiarch_layout(layout)
    ref = f"{registry.host}/busybox-index:latest"
    busybox.skopeo_push(layout, "latest", ref, all_images=True)
    return ref


def _emulator_ready() -> None:
    from runtime import binfmt

    if binfmt.ARCHES["arm64"] not in binfmt.emulated_arches():
        raise RuntimeError("no arm64 emulator registered: run `pybuild binfmt --install arm64` (setup.sh does)")


def run(args) -> dict:
    sizes = dict(SMOKE if args.smoke else FULL)
    if args.work:
        sizes["work"] = args.work
    work = Path(tempfile.mkdtemp(prefix="multiplatform-", dir=env.CACHE_DIR))
    report = {"started": time.strftime("%Y%m%d-%H%M%S"), "smoke": args.smoke, "reps": args.reps, "sizes": sizes,
              "loadavg_start": os.getloadavg(), "versions": {}, "notes": [], "samples": []}
    registry, builders = None, []
    try:
        _emulator_ready()
        registry = env.start_registry(work / "registry")
        context = work / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=_push_busybox_index(registry, work), **sizes))
        for name in args.builders:
            builder = BUILDERS[name](work)
            try:
                builder.start()
                report["versions"][name] = builder.version()
                builders.append(builder)
            except Exception as exc:  # noqa: BLE001 - reported, the others still run
                report["notes"].append(f"builder {name} unavailable: {exc}")
        if any(b.name == "docker26" for b in builders):
            report["refusals"] = refusals(context)
        cases = list(CASES)
        for rep in range(args.reps):
            order = builders if rep % 2 == 0 else builders[::-1]
            for builder in order:
                for case in cases[rep % 3:] + cases[:rep % 3]:
                    log = work / "logs" / f"{builder.name}-{rep}-{case.replace(' ', '-')}.log"
                    print(f"multiplatform: rep {rep + 1}/{args.reps} {builder.name} {case}", file=sys.stderr)
                    sample = builder.build(context, CASES[case], f"{registry.host}/mp:{builder.name}", log)
                    found = steps(log.read_text(errors="replace"), CASES[case])
                    report["samples"].append({"builder": builder.name, "case": case, "rep": rep,
                                              **sample.as_dict(), **found})
                    if not sample.ok:
                        report["notes"].append(f"{builder.name} {case} rep {rep + 1}: {sample.note}")
    finally:
        for builder in builders:
            builder.stop()
        if registry is not None:
            env.remove_registry(registry)
        report["loadavg_end"] = os.getloadavg()
        env.remove_tree(work)
    report["summary"] = summary(report)
    return report


def summary(report: dict) -> str:
    """Per builder: wall seconds of each case, median [min–max]; together
    over the slower alone (ratio of medians, and the median of each
    repetition's own ratio); the emulated RUN over the native one (the
    steps' own times in the builds alone), and the same RUNs' times in the
    build of both; how often the shared stage ran."""
    lines = ["| builder | amd64 alone s | arm64 alone s | both s | both / max(alone) | per-rep ratio "
             "| native RUN s (alone) | emulated RUN s (alone) | emulated / native | the RUNs in both s (amd64, arm64) "
             "| shared stage runs per build | CPU s (amd64, arm64, both) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(s["builder"] for s in report["samples"]))
    for name in names:
        ok = [s for s in report["samples"] if s["builder"] == name and s["ok"]]
        wall = {case: [s["wall"] for s in ok if s["case"] == case] for case in CASES}
        if not all(wall.values()):
            lines.append(f"| {name} | incomplete: see the notes |" + " |" * 10)
            continue
        med = {case: statistics.median(values) for case, values in wall.items()}
        ratio = med["both"] / max(med["amd64 alone"], med["arm64 alone"])
        per_rep = []
        for rep in sorted({s["rep"] for s in ok}):
            got = {s["case"]: s["wall"] for s in ok if s["rep"] == rep}
            if len(got) == 3:
                per_rep.append(got["both"] / max(got["amd64 alone"], got["arm64 alone"]))
        native = [s["run_s"]["amd64"] for s in ok if s["case"] == "amd64 alone" and "amd64" in s["run_s"]]
        emulated = [s["run_s"]["arm64"] for s in ok if s["case"] == "arm64 alone" and "arm64" in s["run_s"]]
        both = [s["run_s"] for s in ok if s["case"] == "both"]
        in_both = (f"{spread([r['amd64'] for r in both if 'amd64' in r])}, "
                   f"{spread([r['arm64'] for r in both if 'arm64' in r])}")
        slowdown = statistics.median(emulated) / statistics.median(native) if native and emulated else None
        shared = sorted({s["shared_runs"] for s in ok})
        cpu = ", ".join(f"{statistics.median([s['cpu'] for s in ok if s['case'] == case]):.1f}" for case in CASES)
        lines.append(f"| {name} | {spread(wall['amd64 alone'])} | {spread(wall['arm64 alone'])} | "
                     f"{spread(wall['both'])} | **{ratio:.2f}×** (target ≤ {TARGET}×) | {spread(per_rep)} | "
                     f"{spread(native)} | {spread(emulated)} | "
                     f"{'–' if slowdown is None else f'{slowdown:.1f}×'} | {in_both} | {shared} | {cpu} |")
    lines.append("")
    lines.append(f"{report['reps']} repetition(s), cold builds; {load_averages(report)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.multiplatform", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny work, one repetition: check the harness")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5; smoke 1)")
    parser.add_argument("--builders", default="pybuild,docker26", help="comma-separated, of: " + ",".join(BUILDERS))
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--work", type=int, default=None,
                        help=f"numbers the final stage's RUN compresses (default {FULL['work']:,})")
    args = parser.parse_args(argv)
    args.builders = [b.strip() for b in args.builders.split(",") if b.strip()]
    for name in args.builders:
        if name not in BUILDERS:
            parser.error(f"unknown builder {name!r}; known: {', '.join(BUILDERS)}")
    if args.reps is None:
        args.reps = 1 if args.smoke else 5
    env.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    report = run(args)
    out = save_report(report, args.results_dir, "multiplatform", args.smoke)
    print(report["summary"])
    for name, answer in report.get("refusals", {}).items():
        print(f"docker 26 on its graph driver, {name}: {answer}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"results: {out}")
    failed = [s for s in report["samples"] if not s["ok"]]
    return 1 if failed or not report["samples"] or report["notes"] else 0


if __name__ == "__main__":
    sys.exit(main())
