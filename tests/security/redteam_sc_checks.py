"""Helpers of the supply-chain red-team tests (test_redteam_supply_chain.py):
pybuild with extra environment, a repository of the registry fixture read
over HTTP, and the attestation manifests of an index."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import requests

from fixtures.pybuild import pybuild_env

ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])


def run(tmp_path: Path, *args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=timeout,
                          env=pybuild_env(tmp_path, **env))


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (done.returncode, done.stderr)
    return done


class Remote:
    """One repository of the registry fixture, read as any client would."""

    def __init__(self, host: str, repository: str):
        self.base = f"http://{host}/v2/{repository}"

    def manifest(self, reference: str) -> tuple[str, dict]:
        response = requests.get(f"{self.base}/manifests/{reference}", headers={"Accept": ACCEPT}, timeout=30)
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"], response.json()

    def blob(self, digest: str) -> bytes:
        response = requests.get(f"{self.base}/blobs/{digest}", timeout=30)
        response.raise_for_status()
        return response.content


def attestations(remote: Remote, index: dict) -> list[tuple[str, list[dict]]]:
    """(the image digest an attestation manifest names, its statements)."""
    found = []
    for entry in index["manifests"]:
        annotations = entry.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            _, manifest = remote.manifest(entry["digest"])
            found.append((annotations["vnd.docker.reference.digest"],
                          [json.loads(remote.blob(layer["digest"])) for layer in manifest["layers"]]))
    return found


_PEAK = ("import resource, subprocess, sys\n"
         "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
         "sys.stderr.write(done.stderr)\n"
         "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def run_measured(tmp_path: Path, *args: str, timeout: int = 600) -> tuple[int, str, int]:
    """pybuild's exit status, stderr and peak resident memory (bytes), the
    peak measured in a process of its own (no other child counted)."""
    done = subprocess.run(["python3", "-c", _PEAK, "pybuild", *args], capture_output=True, text=True,
                          timeout=timeout, env=pybuild_env(tmp_path))
    status, peak_kib = done.stdout.split()
    return int(status), done.stderr, int(peak_kib) * 1024
