"""The benchmark harness works end to end: `python3 -m bench --smoke
--builders pybuild` starts the registry, builds every smoke scenario with
pybuild and writes its results (tiny sizes: well under a minute)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fixtures.tools import require_tools

REPO = Path(__file__).resolve().parents[2]


def test_smoke_pybuild(tmp_path):
    require_tools("docker-registry", "skopeo", "busybox")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--builders", "pybuild",
         "--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60

    [results] = (tmp_path / "results").glob("bench-*-smoke.json")
    report = json.loads(results.read_text())
    measured = {(s["scenario"], s["measure"]) for s in report["samples"] if s["ok"]}
    assert measured >= {("1", "cold"), ("1", "no-op"), ("2", "cold"), ("2", "no-op"), ("2", "one file changed"),
                        ("3", "cold"), ("4", "re-run after ARG change"), ("6", "first push"),
                        ("6", "push after one-layer change"), ("7", "check")}
    for sample in report["samples"]:
        assert sample["wall"] > 0 and sample["cpu"] > 0 and sample["rss_mb"] > 0, sample
    assert "| 1 small multi-stage | cold |" in done.stdout
    shutil.rmtree(tmp_path / "work")
