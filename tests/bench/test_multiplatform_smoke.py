"""`python3 -m bench.multiplatform --smoke` runs end to end with both
builders (tiny work: a harness check, not a timing), and what it reads from
the builds' progress is there: each platform's RUN and one run of the shared
stage per build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from e2e.test_emulation import emulator  # noqa: F401 (a fixture)
from fixtures.docker26 import buildx_plugin
from fixtures.tools import require_tools, trixie_tool

REPO = Path(__file__).resolve().parents[2]


def test_multiplatform_bench_smoke(emulator, tmp_path):  # noqa: F811
    require_tools("docker-registry", "skopeo", "busybox", "docker")
    trixie_tool("dockerd26")
    buildx_plugin()
    done = subprocess.run([sys.executable, "-m", "bench.multiplatform", "--smoke", "--results-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=170,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYBUILD_BENCH_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    [results] = tmp_path.glob("multiplatform-*-smoke.json")
    report = json.loads(results.read_text())
    got = {(s["builder"], s["case"]): s for s in report["samples"]}
    assert set(got) == {(b, c) for b in ("pybuild", "docker26") for c in ("amd64 alone", "arm64 alone", "both")}
    for (builder, case), sample in got.items():
        assert sample["ok"] and sample["wall"] > 0 and sample["cpu"] > 0, sample
        assert sample["shared_runs"] == 1, sample
        arches = {"amd64 alone": ["amd64"], "arm64 alone": ["arm64"], "both": ["amd64", "arm64"]}[case]
        assert sorted(sample["run_s"]) == arches, sample
    assert "| pybuild |" in done.stdout and "| docker26 |" in done.stdout
    # docker 26 on its default graph driver refuses two platforms, either way.
    assert "not supported for the docker driver" in report["refusals"]["buildx build"]
    assert "invalid component" in report["refusals"]["docker build (20.10 client)"]
    # The harness's scratch space (roots, the daemons' data) went with it.
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("multiplatform-")] == []
