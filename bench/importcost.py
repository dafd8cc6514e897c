"""What a warm build with outputs imports, and what that costs (issue 20).

Runs the installed console script (PYTHONPROFILEIMPORTTIME, i.e. `-X
importtime`) on a cached build of testdata/hello, with `-o type=oci` and
with `--metadata-file` (both bypass the no-op memo), and as a no-op the
memo answers, and prints per case the process CPU (user+sys) and the top
modules by cumulative import time, each the median over the repetitions. Import times are the
interpreter's own (a monotonic clock, not CPU), so on a loaded machine
compare the tables, not single runs.

    python3 -m bench.importcost --pybuild .venv/bin/pybuild \\
        --base 127.0.0.1:5099/busybox:latest --reps 5 [--baseline DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELLO = REPO / "testdata" / "hello"
PACKAGES = ("builder", "frontend", "cache", "runtime")


def _cases(work: Path) -> dict[str, list[str]]:
    """Each case's extra flags; the first two bypass the no-op memo, the
    last is answered by it (for comparison: what the memo leaves)."""
    return {
        "a cached build with -o type=oci": ["-o", f"type=oci,dest={work / 'out.tar'}"],
        "a cached build with --metadata-file": ["--metadata-file", str(work / "meta.json")],
        "a no-op answered by the memo": [],
    }


def _run(pybuild: str, args: list[str], env: dict) -> tuple[float, dict[str, int], int]:
    """One run: its CPU seconds, each module's cumulative import µs, and
    the µs of all its imports (the sum over the outermost ones)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([pybuild, *args], env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"pybuild failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cumulative: dict[str, int] = {}
    total = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, name = line[len("import time:"):].split("|")
        if not name.startswith("  "):  # nested imports are indented further
            total += int(cum)
        cumulative[name.strip()] = max(cumulative.get(name.strip(), 0), int(cum))
    return cpu, cumulative, total


def measure(pybuild: str, base: str, reps: int, top: int, baseline: Path | None = None) -> str:
    """The tables of this tree, and, given `baseline` (another checkout's
    builder/, frontend/, cache/ and runtime/, put first on PYTHONPATH), of
    that one too, its runs interleaved with this tree's so that both see
    the same load."""
    work = Path(tempfile.mkdtemp(prefix="pybuild-importcost-"))
    try:
        shutil.copytree(HELLO, work / "ctx")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYBUILD_")}
        trees = {"this tree": env}
        if baseline is not None:
            trees = {f"baseline {baseline}": {**env, "PYTHONPATH": str(baseline)}, **trees}
        # Every tree's bytecode is current: under PYTHONDONTWRITEBYTECODE (or
        # in a fresh baseline) a stale .pyc would be recompiled on every run.
        for tree in [REPO] + ([baseline] if baseline is not None else []):
            subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(tree / p) for p in PACKAGES)],
                           check=True, env={**env, "PYTHONDONTWRITEBYTECODE": ""})
        common = ["--root", str(work / "root"), "-q", "-t", "importcost", "--build-arg", f"BASE={base}"]
        _run(pybuild, [*common, str(work / "ctx")], env)  # cold: fills the cache
        lines = []
        for case, extra in _cases(work).items():
            cpus = {tree: [] for tree in trees}
            totals = {tree: [] for tree in trees}
            times = {tree: defaultdict(list) for tree in trees}
            # Once untimed: the memo written once the context has settled,
            # the files in the page cache.
            _run(pybuild, [*common, *extra, str(work / "ctx")], env)
            for _ in range(reps):
                for tree, tree_env in trees.items():
                    cpu, cumulative, total = _run(pybuild, [*common, *extra, str(work / "ctx")],
                                           {**tree_env, "PYTHONPROFILEIMPORTTIME": "1"})
                    cpus[tree].append(cpu)
                    totals[tree].append(total)
                    for name, us in cumulative.items():
                        times[tree][name].append(us)
            for tree in trees:
                # A module missing from a run counts as 0 there.
                medians = {name: statistics.median(v + [0] * (reps - len(v))) for name, v in times[tree].items()}
                roots = sorted(medians.items(), key=lambda kv: -kv[1])
                lines.append(f"## {tree}: {case}, {reps} runs: medians: imports "
                             f"{statistics.median(totals[tree]) / 1000:.0f} ms, process CPU "
                             f"{statistics.median(cpus[tree]) * 1000:.0f} ms; {len(medians)} modules imported")
                lines.append(f"{'cumulative ms':>14}  module")
                lines += [f"{us / 1000:14.1f}  {name}" for name, us in roots[:top]]
                lines.append("")
        return "\n".join(lines)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python3 -m bench.importcost", description=__doc__.splitlines()[0])
    p.add_argument("--pybuild", default=shutil.which("pybuild") or "pybuild")
    p.add_argument("--base", required=True, help="the busybox image the Dockerfile builds FROM")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--baseline", type=Path, default=None,
                   help="a directory holding another revision's packages (git archive REV builder frontend "
                        "cache runtime | tar -x -C DIR), measured interleaved with this tree")
    p.add_argument("--out", type=Path, default=None, help="also write the tables to this file")
    args = p.parse_args(argv)
    text = measure(args.pybuild, args.base, args.reps, args.top, args.baseline)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
