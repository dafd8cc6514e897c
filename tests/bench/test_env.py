"""The benchmark's Debian mirror comes from the machine's apt sources, in
the order apt reads them (bench/env.py names no mirror of its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.env import debian_mirror

REPO = Path(__file__).resolve().parents[2]


def _apt(tmp_path, sources_list: str = "", **parts: str) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    if sources_list:
        (apt / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (apt / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return apt


def test_deb822_sources_stanza_serving_bookworm(tmp_path):
    apt = _apt(tmp_path, a_sources=(
        "Types: deb\n# http://archive.invalid/snapshot\nURIs: http://security.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n -----END PGP PUBLIC KEY BLOCK-----\n"))
    assert debian_mirror(apt_dir=apt) == "http://mirror.invalid/debian"


def test_sources_list_first_then_the_directory_in_name_order(tmp_path):
    apt = _apt(tmp_path,
               "# deb http://commented.invalid/debian bookworm main\n"
               "deb [ arch=amd64 signed-by=/k.gpg ] http://first.invalid/debian bookworm main\n",
               b_sources="Types: deb\nURIs: http://second.invalid/debian\nSuites: bookworm\n")
    assert debian_mirror(apt_dir=apt) == "http://first.invalid/debian"
    (apt / "sources.list").unlink()
    (apt / "sources.list.d" / "a.list").write_text("deb [arch=amd64] http://third.invalid/debian bookworm main\n")
    assert debian_mirror(apt_dir=apt) == "http://third.invalid/debian"


def test_files_apt_does_not_read_are_ignored(tmp_path):
    apt = _apt(tmp_path, a_list_disabled="deb http://disabled.invalid/debian bookworm main\n",
               b_sources="Types: deb\nURIs: http://other.invalid/x\nSuites: nodistro\n")
    with pytest.raises(RuntimeError, match="no apt source .* serves Debian bookworm"):
        debian_mirror(apt_dir=apt)


def test_this_machine_has_one():
    assert "://" in debian_mirror()
