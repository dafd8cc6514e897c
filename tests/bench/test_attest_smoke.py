"""`python3 -m bench.attest --smoke` runs end to end (tiny work: a harness
check, not a timing): every measurement is there for every repetition, the
scans find the Debian base's packages, the cold scans read every layer, the
cached one none, and the one after a top-layer rebuild that layer only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fixtures.debian_base import cache_dir
from fixtures.tools import require_tools

REPO = Path(__file__).resolve().parents[2]


def test_attest_bench_smoke(tmp_path):
    require_tools("docker-registry", "skopeo", "busybox", "mmdebstrap")
    done = subprocess.run([sys.executable, "-m", "bench.attest", "--smoke", "--results-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYBUILD_BENCH_CACHE": str(tmp_path / "cache"),
                               # the Debian tar the other tests made (made here if missing)
                               "PYBUILD_TEST_CACHE": str(cache_dir())})
    assert done.returncode == 0, done.stdout + done.stderr
    [results] = tmp_path.glob("attest-*-smoke.json")
    report = json.loads(results.read_text())
    reps = report["reps"]
    assert reps == 2 and report["notes"] == []
    by_case: dict[tuple[str, str], list[dict]] = {}
    for sample in report["samples"]:
        by_case.setdefault((sample["part"], sample["case"]), []).append(sample)
    assert sorted(by_case) == sorted([
        ("provenance in process", "mode=min"), ("provenance in process", "mode=max"),
        ("provenance CLI", "provenance min (default)"), ("provenance CLI", "--provenance=false"),
        ("sbom scan", "cold, snapshots"), ("sbom scan", "cold, blobs"), ("sbom scan", "cached"),
        ("sbom scan", "top layer changed"),
        ("sbom build", "rebuild without --sbom"), ("sbom build", "rebuild --sbom=true")])
    for (part, case), samples in by_case.items():
        assert sorted(s["rep"] for s in samples) == list(range(reps)), (part, case)
        for sample in samples:
            if part == "provenance in process":
                assert sample["ms"] > 0 and sample["statement_bytes"] > 0, sample
            elif part == "sbom scan":
                assert sample["ms"] > 0 and sample["packages"] >= 80, sample
                # The base and the top layer (the smoke run has no apt layer).
                assert sample["layers"] == 2, sample
                expected = {"cold, snapshots": 2, "cold, blobs": 2, "cached": 0, "top layer changed": 1}[case]
                assert sample["layers_read"] == expected, sample
            else:
                assert sample["ok"] and sample["wall"] > 0, sample
    # max mode says more than min about the same build.
    [small, *_], [large, *_] = by_case[("provenance in process", "mode=min")], by_case[
        ("provenance in process", "mode=max")]
    assert large["statement_bytes"] > small["statement_bytes"]
    for row in ("| provenance mode=min", "| provenance mode=max", "| … difference, ms", "| SBOM cold, snapshots",
                "| SBOM cold, blobs", "| SBOM cached", "| SBOM top layer changed", "cold scan / top-layer rebuild"):
        assert row in done.stdout, row
    assert "load average" in done.stdout
    # The harness's scratch space (roots, registry) went with it.
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("attest-")] == []
