"""The project names no package-registry host: not in code, docs or
scripts. The hosts are the ones this machine's own clients use (apt's
sources, pip's index, npm's registry), so none is written down here either."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from fixtures.tools import require_tools

REPO = Path(__file__).resolve().parents[1]
_URL_HOST = re.compile(r"[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([a-z0-9.-]+\.[a-z]{2,})", re.IGNORECASE)


def _registry_hosts() -> set[str]:
    hosts = set()
    apt = Path("/etc/apt")
    # Every file there, disabled ones too, and URLs in comments (snapshot archives).
    for path in [apt / "sources.list", *(apt / "sources.list.d").glob("*")]:
        if path.is_file():
            hosts |= set(_URL_HOST.findall(path.read_text(errors="replace")))
    from pip._internal.models.index import PyPI  # pip's own default index

    hosts |= {PyPI.netloc, PyPI.file_storage_domain}
    if shutil.which("npm"):
        done = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True, timeout=60)
        hosts |= set(_URL_HOST.findall(done.stdout))
    return {host.lower() for host in hosts}


def test_no_tracked_file_names_a_package_registry_host():
    require_tools("git")
    hosts = _registry_hosts()
    assert hosts, "found no registry host to look for"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    named = []
    for name in files.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace").lower()
        named += [f"{name}: {host}" for host in sorted(hosts) if host in text]
    assert named == []
