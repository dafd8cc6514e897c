"""Helpers of the supply-chain red-team tests (test_redteam_supply_chain.py):
pybuild with extra environment (and its peak memory), a repository of the
registry fixture read over HTTP, the attestation manifests of an index, a
build that mounts secrets, the bytes an OCI archive holds, and cosign keys
with chosen scrypt parameters."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import requests

from builder.signing.keys import SIGSTORE_LABEL, _pem
from fixtures.pybuild import pybuild_env
from fixtures.registry import Remote
from fixtures.servers import RecordingServer, send
from security.redteam_mp_checks import write_context


def run(tmp_path: Path, *args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pybuild", *args], capture_output=True, text=True, timeout=timeout,
                          env=pybuild_env(tmp_path, **env))


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (done.returncode, done.stderr)
    return done


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


def readable_bytes(path: Path) -> bytes:
    """Every byte an OCI archive holds, its gzip layers decompressed."""
    found = [path.read_bytes()]
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if member.isfile():
                data = archive.extractfile(member).read()
                found.append(data)
                if data[:2] == b"\x1f\x8b":
                    found.append(gzip.decompress(data))
    return b"\n".join(found)


def secret_build(tmp_path: Path, base: str, attest: str, output: str, url_password: str = "",
                 **env: str) -> subprocess.CompletedProcess:
    """A build whose RUN mounts a file secret, an env secret and an ssh
    socket (and, with `url_password`, ADDs a URL carrying credentials)."""
    (tmp_path / "secret.txt").write_text("rtFileSecret7731")
    agent = tmp_path / "rtAgentSocketPath.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(agent))
    server = RecordingServer(lambda handler: send(handler, 200, b"downloaded\n"))
    add = f"ADD http://user:{url_password}@{server.host}/file.txt /file.txt\n" if url_password else ""
    try:
        ctx = write_context(tmp_path, (
            f"FROM {base}\n{add}"
            "RUN --mount=type=secret,id=tok --mount=type=secret,id=envtok,env=TOKEN "
            "--mount=type=ssh test -s /run/secrets/tok && test -n \"$TOKEN\"\n"))
        return run(tmp_path, "build", "--root", str(tmp_path / "root"), "--attest", attest, "--sbom=true",
                   "--secret", f"id=tok,src={tmp_path / 'secret.txt'}", "--secret", "id=envtok,env=RT_SECRET_ENV",
                   "--ssh", f"default={agent}", "--build-arg", "PLAIN=visible", "--progress=plain",
                   "--metadata-file", str(tmp_path / "meta.json"), "-o", output, str(ctx),
                   RT_SECRET_ENV="rtEnvSecret5519", **env)
    finally:
        server.close()
        listener.close()


def assert_absent(everything: bytes, *values: str) -> None:
    """None of `values` in `everything`; else the places they are, shown."""
    for value in values:
        assert value.encode() not in everything, b"\n----\n".join(
            everything[max(0, i - 200):i + 40] for i in hits(everything, value.encode())).decode(errors="replace")


def hits(data: bytes, needle: bytes) -> list[int]:
    found, at = [], data.find(needle)
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def cosign_key(path: Path, n: int, r: int, p: int) -> str:
    """A cosign-format encrypted key with the given scrypt parameters (its
    ciphertext random: the parameters are read before anything is decrypted)."""

    def b64(size: int) -> str:
        return base64.b64encode(os.urandom(size)).decode()

    body = {"kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": b64(32)},
            "cipher": {"name": "nacl/secretbox", "nonce": b64(24)}, "ciphertext": b64(200)}
    path.write_bytes(_pem(SIGSTORE_LABEL, json.dumps(body).encode()))
    return str(path)


def requests_status(url: str) -> int:
    """The registry's answer to a GET (404: nothing was pushed there)."""
    return requests.get(url, timeout=30).status_code


def spdx_errors(document: dict) -> list:
    """What spdx-tools (the test oracle) finds wrong in an SPDX 2.3 document;
    a document it cannot even parse raises."""
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    return validate_full_spdx_document(JsonLikeDictParser().parse(document), "SPDX-2.3")
