"""python3 -m bench: pybuild against docker BuildKit and buildah.

    python3 -m bench --smoke --builders pybuild       # harness check, < 1 min
    python3 -m bench --reps 3                         # the full run (see docs/benchmarks.md)
    python3 -m bench --scenarios 2,6 --builders pybuild,docker --reps 5
    python3 -m bench --scenarios 1,2 --builders pybuild-venv,pybuild-rootless,pybuild-rootless-fuse,docker

Results: a JSON file in bench/results/ (every sample) and a markdown table
of medians on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import env, limits, rootless, scenarios
from bench.builders import BUILDERS

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition: check the harness")
    p.add_argument("--scenarios", default=None, help="comma-separated scenario numbers (default: all)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per scenario (default 3; smoke 1)")
    p.add_argument("--builders", default="pybuild,docker,buildah", help="comma-separated, of: " + ",".join(BUILDERS))
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir in /var/tmp)")
    p.add_argument("--limits", action=argparse.BooleanOptionalAction, default=None,
                   help="measure gzip/zstd/disk limits (default: on, off with --smoke)")
    p.add_argument("--report", type=Path, default=None, help="print the table of an existing results JSON and exit")
    args = p.parse_args(argv)
    # The smoke run leaves out 5 (debootstrap, apt and pip over the network).
    default = [k for k in scenarios.SCENARIOS if not (args.smoke and k == "5")]
    args.scenarios = [s.strip() for s in (args.scenarios or ",".join(default)).split(",") if s.strip()]
    for s in args.scenarios:
        if s not in scenarios.SCENARIOS:
            p.error(f"unknown scenario {s!r}; known: {', '.join(scenarios.SCENARIOS)}")
    args.builders = [b.strip() for b in args.builders.split(",") if b.strip()]
    for b in args.builders:
        if b not in BUILDERS:
            p.error(f"unknown builder {b!r}; known: {', '.join(BUILDERS)}")
    if args.reps is None:
        args.reps = 1 if args.smoke else 3
    if args.limits is None:
        args.limits = not args.smoke
    return args


def machine_info() -> dict:
    mem_kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
    return {"nproc": os.cpu_count(), "ram_gb": round(mem_kb / 1024 / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_start": os.getloadavg()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        builders = list(dict.fromkeys(s["builder"] for s in saved["samples"]))
        builders.sort(key=lambda b: list(BUILDERS).index(b))
        print(table(saved, builders))
        print(rootless_table(saved, builders))
        return 0
    sizes = scenarios.SMOKE if args.smoke else scenarios.FULL
    owned_work = args.work is None
    env.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="work-", dir=env.CACHE_DIR))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {"started": stamp, "smoke": args.smoke, "reps": args.reps, "sizes": sizes.__dict__,
              "machine": machine_info(), "versions": {}, "notes": [], "samples": []}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    partial = args.results_dir / f"bench-{stamp}{'-smoke' if args.smoke else ''}.partial.json"
    print(f"bench: work dir {work}, log {log}, partial results {partial}", file=sys.stderr)
    registry = None
    builders = []
    try:
        registry = env.start_registry(work / "registry")
        env.push_busybox(registry, work)
        debian = None
        if "5" in args.scenarios:
            try:
                scenarios.ensure_wheels()
                debian = env.push_debian(registry, log)
            except Exception as exc:  # noqa: BLE001 - a skipped scenario is reported, not fatal
                report["notes"].append(f"scenario 5 skipped: no Debian base image: {exc}")
        bench = scenarios.Bench(work, sizes, registry.host, debian, log)
        bench.owner = rootless.context_owner(args.builders)
        for name in args.builders:
            builder = BUILDERS[name](work, log)
            try:
                builder.start()
                report["versions"][name] = builder.version()
                builders.append(builder)
            except Exception as exc:  # noqa: BLE001
                report["notes"].append(f"builder {name} unavailable: {exc}")
        if args.limits:
            print("bench: measuring physical limits", file=sys.stderr)
            report["limits"] = limits.measure(work=work)
        keys = [k for k in args.scenarios if not (k == "6" and "2" in args.scenarios)]
        for key in keys:
            if key == "5" and debian is None:
                continue
            for rep in range(args.reps):
                # A B A B: alternate the order so slow drift hits every builder.
                order = builders if rep % 2 == 0 else builders[::-1]
                for builder in order:
                    if key in scenarios.PYBUILD_ONLY and builder.name != "pybuild":
                        continue
                    print(f"bench: scenario {key} rep {rep + 1}/{args.reps} {builder.name}", file=sys.stderr)
                    try:
                        measures = scenarios.run_scenario(bench, key, builder, rep, set(args.scenarios))
                    except Exception as exc:  # noqa: BLE001
                        report["notes"].append(f"scenario {key} {builder.name} rep {rep + 1}: {exc}")
                        traceback.print_exc()
                        continue
                    for measure, sample in measures.items():
                        report["samples"].append({"scenario": scenarios.scenario_of(key, measure),
                                                  "measure": measure, "builder": builder.name,
                                                  "rep": rep, **sample.as_dict()})
                        if not sample.ok:
                            report["notes"].append(f"scenario {key} {measure} {builder.name}: {sample.note}")
                    _save(partial, report)  # a run cut short still leaves its samples
    finally:
        for builder in builders:
            try:
                builder.stop()
            except Exception as exc:  # noqa: BLE001
                report["notes"].append(f"stopping {builder.name}: {exc}")
        if registry is not None:
            env.remove_registry(registry)
        report["machine"]["loadavg_end"] = os.getloadavg()
        args.results_dir.mkdir(parents=True, exist_ok=True)
        out = args.results_dir / f"bench-{stamp}{'-smoke' if args.smoke else ''}.json"
        report["table"] = table(report, [b.name for b in builders] or args.builders)
        report["table"] += rootless_table(report, [b.name for b in builders] or args.builders)
        _save(out, report)
        partial.unlink(missing_ok=True)
        if owned_work and not os.environ.get("PYBUILD_BENCH_KEEP"):  # keep it to read bench.log
            env.remove_tree(work)
    print(report["table"])
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"results: {out}")
    failed = [s for s in report["samples"] if not s["ok"]]
    return 1 if failed or not report["samples"] else 0


def _save(path: Path, report: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.rename(path)


def _median(samples, field):
    values = [s[field] for s in samples if s["ok"]]
    return statistics.median(values) if values else None


def _fmt(value, unit=""):
    if value is None:
        return "–"
    if unit == "MB":
        return f"{value:.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(report: dict, builders: list[str]) -> str:
    groups: dict[tuple, dict[str, list]] = {}
    for s in report["samples"]:
        groups.setdefault((s["scenario"], s["measure"]), {}).setdefault(s["builder"], []).append(s)
    peers = [b for b in builders if b in ("docker", "buildah")]
    head = ["scenario", "measure"] + [f"{b} wall s" for b in builders]
    head += [f"pybuild/{p}" for p in peers] + ["target vs docker"]
    head += [f"{b} CPU s" for b in builders] + [f"{b} peak RSS MB" for b in builders]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = list(scenarios.TARGETS)
    for key in sorted(groups, key=lambda k: order.index(k) if k in order else 99):
        per = groups[key]
        wall = {b: _median(per.get(b, []), "wall") for b in builders}
        row = [f"{key[0]} {scenarios.SCENARIOS[key[0]]}", key[1]] + [_fmt(wall[b]) for b in builders]
        for p in peers:
            ok = wall.get("pybuild") and wall.get(p)
            row.append(f"{wall['pybuild'] / wall[p]:.2f}×" if ok else "–")
        target = scenarios.TARGETS.get(key)
        row.append(f"≤{target}×" if target else "–")
        row += [_fmt(_median(per.get(b, []), "cpu")) for b in builders]
        row += [_fmt(_median(per.get(b, []), "rss_mb"), "MB") for b in builders]
        lines.append("| " + " | ".join(row) + " |")
    n = {b: len([s for s in report["samples"] if s["builder"] == b]) for b in builders}
    lines.append("")
    lines.append(f"medians of {report['reps']} repetition(s); samples per builder: {n}")
    return "\n".join(lines)


def _spread(samples) -> str:
    values = [s["wall"] for s in samples if s["ok"]]
    if not values:
        return "–"
    return f"{_fmt(statistics.median(values))} [{_fmt(min(values))}–{_fmt(max(values))}]"


def rootless_table(report: dict, builders: list[str]) -> str:
    """Each rootless builder against the root build (the same interpreter,
    pybuild-venv, when it ran) and docker: median wall [min–max] and the
    ratios of medians, with issue 16's targets. Empty without one."""
    users = [b for b in builders if getattr(rootless.BUILDERS.get(b), "user", None)]
    if not users:
        return ""
    base = "pybuild-venv" if "pybuild-venv" in builders else "pybuild"
    groups: dict[tuple, dict[str, list]] = {}
    for s in report["samples"]:
        groups.setdefault((s["scenario"], s["measure"]), {}).setdefault(s["builder"], []).append(s)
    shown = [b for b in ("pybuild", base, "docker") if b in builders]
    shown = list(dict.fromkeys(shown))
    head = ["scenario", "measure"] + [f"{b} s" for b in shown]
    for u in users:
        head += [f"{u} s", f"{u}/{base}"] + ([f"{u}/docker"] if "docker" in builders else [])
    head.append("target (pybuild-rootless)")
    lines = ["", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = list(scenarios.TARGETS)
    for key in sorted(groups, key=lambda k: order.index(k) if k in order else 99):
        per = groups[key]
        if not any(per.get(u) for u in users):
            continue
        wall = {b: _median(per.get(b, []), "wall") for b in builders}
        row = [f"{key[0]} {scenarios.SCENARIOS[key[0]]}", key[1]] + [_spread(per.get(b, [])) for b in shown]
        for u in users:
            row.append(_spread(per.get(u, [])))
            for peer in [base] + (["docker"] if "docker" in builders else []):
                row.append(f"{wall[u] / wall[peer]:.2f}×" if wall.get(u) and wall.get(peer) else "–")
        target = rootless.TARGETS.get(key)
        row.append(f"≤{target[1]}× {base if target[0] == 'root' else target[0]}" if target else "–")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"median [min–max] wall s of {report['reps']} repetition(s); ratios of medians; "
                 f"root baseline: {base}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
