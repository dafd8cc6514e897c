"""Issue 18's numbers: what provenance costs a build, and what the SBOM scan
of a Debian base costs, cold and cached by layer.

    python3 -m bench.attest [--reps 7] [--smoke]

Provenance:
- in process: a BuildRecord observing the graph of a 120-step Dockerfile
  (converted once with the real frontend against the loopback registry, as
  the build converts it anyway), the in-toto statement, and the attestation
  manifest stored in a content store; mode=min and mode=max alternately;
- CLI: a cached no-op `pybuild build --push` of the same Dockerfile to the
  loopback registry, with the default provenance (min, as an image leaving
  the machine gets) and with `--provenance=false`, alternately.

SBOM: the Debian 12 minbase the tests make (tests/fixtures/debian_base.py,
mmdebstrap) plus an apt layer (python3-pip, as tests/attest/
test_sbom_debian.py) to pass 100 packages, plus a one-file top layer, built
with pybuild into a root's local store. Timed in process (scan, SPDX
document, statement: what a build with --sbom pays): cold from snapshots
(the facts cache emptied), cold from blobs (the image pulled into a second
root, each layer read from its blob: no snapshot), cached (every layer's
facts known), and after a rebuild that changed only the top layer, with the
layers read counted. The top-layer rebuild itself, `pybuild build` without
--sbom, is the yardstick; the same rebuild with `--sbom=true` is timed too.

Results: bench/results/attest-STAMP.json (every sample, the load average
around the run) and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import env, measure
from bench.measure import load_averages, save_report, spread
from bench.builders import PYBUILD, pybuild_env

from attest.provenance_graphs import real_definition  # noqa: E402 (bench.env put tests/ on the path)
from fixtures import debian_base  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FULL = {"steps": 120, "apt": "python3-pip"}
SMOKE = {"steps": 12, "apt": ""}
PROVENANCE_TARGET_MS = 10
SBOM_TARGET_S = 0.3
APT_LAYER = ("RUN apt-get update -q && apt-get install -y -q --no-install-recommends {apt} >/dev/null "
             "&& rm -rf /var/lib/apt/lists/*\n")
TOP_LAYER = "ARG TOP=0\nRUN echo \"$TOP\" > /top\n"


def many_steps(base: str, steps: int) -> str:
    """A Dockerfile of `steps` instructions after FROM: RUN, ENV and COPY in
    turn (each RUN and COPY a layer, each ENV a config change)."""
    lines = [f"FROM {base}"]
    for n in range(steps):
        lines.append((f"RUN echo {n} > /step-{n}", f"ENV STEP_{n}={n}", f"COPY file-{n % 10} /copied-{n}")[n % 3])
    return "\n".join(lines) + "\n"


def _pybuild(log: Path, root: Path, *args: str) -> measure.Sample:
    return measure.run([PYBUILD, "build", "--root", str(root), "--progress", "plain", *args], log=log,
                       env=pybuild_env())


def _alternate(rep: int, items: list) -> list:
    return items if rep % 2 == 0 else items[::-1]


# -- provenance --------------------------------------------------------------------


def provenance_in_process(dockerfile: str, work: Path, reps: int) -> list[dict]:
    """Each rep, each mode: the seconds from a new BuildRecord to the stored
    attestation manifest, and the statement's size."""
    from builder.attest.manifests import Statement, store_attestation_manifest
    from builder.attest.options import ProvenanceMode, ProvenanceOptions
    from builder.attest.provenance import predicate_type, provenance_statement
    from builder.attest.record import BuildRecord, frontend_args
    from builder.image import Descriptor, OCI_MANIFEST
    from cache.digest import Digest
    from cache.store import ContentStore

    store = ContentStore(work / "provenance-store")
    definition = real_definition(dockerfile, store)
    subject = Descriptor(OCI_MANIFEST, Digest.of_bytes(b"the image manifest"), 18)
    modes = {mode.value: ProvenanceOptions(mode=mode) for mode in (ProvenanceMode.MIN, ProvenanceMode.MAX)}

    def once(options: ProvenanceOptions) -> tuple[float, int]:
        started = time.perf_counter()
        record = BuildRecord(dockerfile=dockerfile.encode(), args=frontend_args(build_args={}))
        record.observe_graph(definition)
        record.finish()
        body = provenance_statement(record, options, names=["registry.local/app:1"], manifest=subject.digest,
                                    platform="linux/amd64")
        store_attestation_manifest(store, [Statement(body, predicate_type(options))], subject)
        return time.perf_counter() - started, len(body)

    for options in modes.values():  # imports and first-call caches, unmeasured
        once(options)
    samples = []
    for rep in range(reps):
        for name in _alternate(rep, list(modes)):
            seconds, size = once(modes[name])
            samples.append({"part": "provenance in process", "case": f"mode={name}", "rep": rep,
                            "ms": seconds * 1000, "statement_bytes": size})
    return samples


def provenance_cli(context: Path, registry, work: Path, reps: int) -> list[dict]:
    """A cached no-op `build --push`, with the default provenance and
    without; each variant built and pushed once before, unmeasured."""
    root, ref = work / "provenance-root", f"{registry.host}/provenance:1"
    cases = {"provenance min (default)": [], "--provenance=false": ["--provenance=false"]}
    for case, flags in cases.items():
        warm = _pybuild(work / "logs" / "provenance-warm.log", root, "--push", "-t", ref, *flags, str(context))
        if not warm.ok:
            raise RuntimeError(f"provenance warm-up build ({case}) failed: {warm.note}")
    samples = []
    for rep in range(reps):
        for case in _alternate(rep, list(cases)):
            print(f"attest: rep {rep + 1}/{reps} push {case}", file=sys.stderr)
            sample = _pybuild(work / "logs" / f"provenance-{rep}.log", root, "--push", "-t", ref, *cases[case],
                              str(context))
            samples.append({"part": "provenance CLI", "case": case, "rep": rep, **sample.as_dict()})
    return samples


# -- SBOM --------------------------------------------------------------------------


def _timed_sbom(root: Path, name: str, *, forget: bool = False, from_blobs: bool = False) -> dict:
    """The SBOM statement of a stored image, timed: scan, SPDX document and
    statement, as a build with --sbom makes them."""
    from builder.attest.sbom import sbom_statement
    from builder.root.images import find
    from builder.root.worker import Worker
    from builder.attest.sbom_scan import LayerScanner

    worker = Worker.open(root)
    try:
        scanner = LayerScanner.for_worker(worker)
        try:
            if forget:
                scanner.cache.forget(set())
            stored = find(worker, name)
            refs = scanner.refs_of_image(stored.image)
            if from_blobs:
                refs = [replace(ref, snapshot=None) for ref in refs]
            started = time.perf_counter()
            body = sbom_statement(scanner, refs, subject_digests=[(name, stored.image.manifest.digest)])
            seconds = time.perf_counter() - started
            return {"ms": seconds * 1000, "layers": len(refs), "layers_read": scanner.read_layers,
                    "packages": len(json.loads(body)["predicate"]["packages"]) - 1}
        finally:
            scanner.close()
    finally:
        worker.close()


def sbom(context: Path, registry, work: Path, reps: int) -> tuple[list[dict], dict]:
    root, blobs_root = work / "sbom-root", work / "sbom-blobs-root"
    logs = work / "logs"
    first = _pybuild(logs / "sbom-first.log", root, "-t", "sbom:1", str(context))
    if not first.ok:
        raise RuntimeError(f"the SBOM image's first build failed: {first.note}")
    setup = {"first_build": first.as_dict()}
    # The second root reads the image from the registry: a base image there,
    # each of its layers a pulled blob.
    pushed = f"{registry.host}/sbom:1"
    measure.quiet([PYBUILD, "build", "--root", str(root), "--push", "--provenance=false", "-t", pushed,
                   str(context)], env=pybuild_env(), log=logs / "sbom-push.log")
    pulled = work / "pulled"
    pulled.mkdir()
    (pulled / "Dockerfile").write_text(f"FROM {pushed}\n")
    measure.quiet([PYBUILD, "build", "--root", str(blobs_root), "-t", "sbom:pulled", str(pulled)],
                  env=pybuild_env(), log=logs / "sbom-pull.log")
    _timed_sbom(root, "sbom:1")  # the first scan fills the facts cache
    samples = []

    def scan(case: str, rep: int, **how) -> None:
        root_of = blobs_root if how.get("from_blobs") else root
        samples.append({"part": "sbom scan", "case": case, "rep": rep,
                        **_timed_sbom(root_of, "sbom:pulled" if how.get("from_blobs") else "sbom:1", **how)})

    def build(case: str, rep: int, *flags: str) -> None:
        sample = _pybuild(logs / f"sbom-{rep}.log", root, "--build-arg", f"TOP={case}-{rep}", *flags, "-t",
                          "sbom:1", str(context))
        samples.append({"part": "sbom build", "case": case, "rep": rep, **sample.as_dict()})

    steps = {
        "cold, snapshots": lambda rep: scan("cold, snapshots", rep, forget=True),
        "cold, blobs": lambda rep: scan("cold, blobs", rep, forget=True, from_blobs=True),
        "cached": lambda rep: scan("cached", rep),
        # The rebuild (no --sbom) is the yardstick; the scan after it reads
        # the new top layer only.
        "top layer changed": lambda rep: (build("rebuild without --sbom", rep),
                                          scan("top layer changed", rep)),
        "rebuild --sbom=true": lambda rep: build("rebuild --sbom=true", rep, "--sbom=true"),
    }
    names = list(steps)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            print(f"attest: rep {rep + 1}/{reps} sbom {name}", file=sys.stderr)
            steps[name](rep)
    return samples, setup


# -- the run -----------------------------------------------------------------------


def run(args) -> dict:
    sizes = dict(SMOKE if args.smoke else FULL)
    work = Path(tempfile.mkdtemp(prefix="attest-", dir=env.CACHE_DIR))
    report = {"started": time.strftime("%Y%m%d-%H%M%S"), "smoke": args.smoke, "reps": args.reps, "sizes": sizes,
              "loadavg_start": os.getloadavg(), "notes": [], "samples": [],
              "version": measure.quiet([PYBUILD, "version"], env=pybuild_env()).stdout.decode().strip()}
    registry = None
    try:
        registry = env.start_registry(work / "registry")
        busybox = env.push_busybox(registry, work)
        context = work / "provenance-context"
        context.mkdir()
        dockerfile = many_steps(busybox, sizes["steps"])
        (context / "Dockerfile").write_text(dockerfile)
        for n in range(10):
            (context / f"file-{n}").write_text(f"{n}\n" * 100)
        report["samples"] += provenance_in_process(dockerfile, work, args.reps)
        report["samples"] += provenance_cli(context, registry, work, args.reps)

        base = f"{registry.host}/debian:bookworm"
        debian_base.push_debian_base(work / "debian-layout", base)
        sbom_context = work / "sbom-context"
        sbom_context.mkdir()
        (sbom_context / "Dockerfile").write_text(
            f"FROM {base}\n" + (APT_LAYER.format(apt=sizes["apt"]) if sizes["apt"] else "") + TOP_LAYER)
        samples, report["sbom_setup"] = sbom(sbom_context, registry, work, args.reps)
        report["samples"] += samples
    finally:
        if registry is not None:
            env.remove_registry(registry)
        report["loadavg_end"] = os.getloadavg()
        env.remove_tree(work)
    for sample in report["samples"]:
        if sample.get("ok") is False:
            report["notes"].append(f"{sample['part']} {sample['case']} rep {sample['rep'] + 1}: {sample['note']}")
    report["summary"] = summary(report)
    return report


def _values(report: dict, part: str, case: str, key: str) -> list[float]:
    return [s[key] for s in report["samples"] if s["part"] == part and s["case"] == case and s.get("ok", True)]


def summary(report: dict) -> str:
    """Medians [min–max] of each measurement, against issue 18's targets."""
    lines = ["| measurement | median [min–max] | target |", "|---|---|---|"]
    for mode in ("min", "max"):
        ms = _values(report, "provenance in process", f"mode={mode}", "ms")
        size = _values(report, "provenance in process", f"mode={mode}", "statement_bytes")
        lines.append(f"| provenance mode={mode} in process, {report['sizes']['steps']} steps, ms "
                     f"(statement {int(statistics.median(size)) if size else 0} B) | {spread(ms)} "
                     f"| < {PROVENANCE_TARGET_MS} ms |")
    on = _values(report, "provenance CLI", "provenance min (default)", "wall")
    off = _values(report, "provenance CLI", "--provenance=false", "wall")
    if on and off:
        per_rep = [a - b for a, b in zip(on, off)]
        lines.append(f"| cached no-op `build --push`, provenance min / false, s | {spread(on)} / {spread(off)} "
                     f"| |")
        lines.append(f"| … difference, ms (ratio of medians) | {spread([d * 1000 for d in per_rep])} "
                     f"({statistics.median(on) / statistics.median(off):.3f}×) | < {PROVENANCE_TARGET_MS} ms |")
        cpu_on = _values(report, "provenance CLI", "provenance min (default)", "cpu")
        cpu_off = _values(report, "provenance CLI", "--provenance=false", "cpu")
        lines.append(f"| … CPU difference, ms (per rep; CPU s min / false: {statistics.median(cpu_on):.3f} / "
                     f"{statistics.median(cpu_off):.3f}) | {spread([(a - b) * 1000 for a, b in zip(cpu_on, cpu_off)])} "
                     f"| < {PROVENANCE_TARGET_MS} ms |")
    for case in ("cold, snapshots", "cold, blobs", "cached", "top layer changed"):
        ms = _values(report, "sbom scan", case, "ms")
        read = sorted({s["layers_read"] for s in report["samples"] if s["case"] == case})
        found = [s for s in report["samples"] if s["case"] == case]
        detail = f"{found[0]['packages']} packages, {found[0]['layers']} layers, read {read}" if found else ""
        target = {"cached": "", "top layer changed": "reads the top layer only"}.get(
            case, f"< {SBOM_TARGET_S * 1000:.0f} ms")
        lines.append(f"| SBOM {case}, ms ({detail}) | {spread(ms)} | {target} |")
    plain = _values(report, "sbom build", "rebuild without --sbom", "wall")
    with_sbom = _values(report, "sbom build", "rebuild --sbom=true", "wall")
    cold = [ms / 1000 for ms in _values(report, "sbom scan", "cold, snapshots", "ms")]
    if plain and cold:
        lines.append(f"| top-layer rebuild without --sbom / with --sbom=true, s | {spread(plain)} / "
                     f"{spread(with_sbom)} | |")
        first = report.get("sbom_setup", {}).get("first_build", {}).get("wall")
        lines.append(f"| cold scan / top-layer rebuild without --sbom (medians) | "
                     f"{statistics.median(cold) / statistics.median(plain):.2f}× | |")
        if first:
            lines.append(f"| cold scan / the image's first build ({first:.1f} s, once) | "
                         f"{statistics.median(cold) / first:.3f}× | |")
    lines.append("")
    lines.append(f"{report['reps']} repetition(s), alternating; {load_averages(report)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.attest", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny work, two repetitions: check the harness")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 7; smoke 2)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.smoke else 7
    env.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    report = run(args)
    out = save_report(report, args.results_dir, "attest", args.smoke)
    print(report["summary"])
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"results: {out}")
    return 1 if report["notes"] or not report["samples"] else 0


if __name__ == "__main__":
    sys.exit(main())
