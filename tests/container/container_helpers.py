"""Helpers of the in-container tests: root's pybuild run as a user runs it,
and the testdata/hello build every container test compares digests of."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from fixtures.pybuild import SOURCE, pybuild_env

# The console script beside this Python when the venv is not on PATH.
PYBUILD = shutil.which("pybuild") or str(Path(sys.executable).with_name("pybuild"))


def run_pybuild(root: Path, *args: str, env_home: Path, extra_env: dict | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Root's `pybuild --root ROOT ARGS`, with a config home of `env_home`."""
    return subprocess.run([PYBUILD, "--root", str(root), *args], env=pybuild_env(env_home, **(extra_env or {})),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


CONTEXT = SOURCE / "testdata" / "hello"
EPOCH = "1700000000"


def hello_args(busybox_ref: str, dest: str) -> list[str]:
    """`pybuild build` of testdata/hello (context not included) on the busybox
    base, pushed reproducibly: with SOURCE_DATE_EPOCH=EPOCH every builder,
    root or rootless, in a container or not, gives one manifest digest."""
    return ["build", "--progress", "plain", "--build-arg", f"BASE={busybox_ref}",
            "-o", f"type=image,name={dest},push=true,rewrite-timestamp=true"]


def manifest_digest(ref: str) -> str:
    """The digest of the image manifest the registry serves for `ref`
    (skopeo's view): through the index of the image and its provenance
    when there is one (a push carries buildx's default min provenance,
    whose vcs hints differ between a checkout and a container)."""
    done = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                          check=True, capture_output=True, timeout=60)
    body = json.loads(done.stdout)
    if "manifests" in body:
        return body["manifests"][0]["digest"]  # the image comes before its attestation
    return "sha256:" + hashlib.sha256(done.stdout).hexdigest()
