"""Crafted layer tars for the SBOM tests: package databases, whiteouts and
opaque directories written as an OCI layer writes them."""

from __future__ import annotations

import io
import json
import tarfile


def dpkg_paragraph(name: str, version: str, arch: str = "amd64", status: str = "install ok installed",
                   source: str = "") -> str:
    lines = [f"Package: {name}", f"Status: {status}", "Priority: optional", f"Architecture: {arch}"]
    if source:
        lines.append(f"Source: {source}")
    lines += [f"Version: {version}", "Maintainer: Debian Maintainers <maint@debian.org>",
              f"Description: the {name} package", " a longer description", " ."]
    return "\n".join(lines) + "\n"


def dpkg_status(*paragraphs: str) -> bytes:
    return "\n".join(paragraphs).encode()


def apk_installed(*packages: tuple[str, str]) -> bytes:
    body = ""
    for name, version in packages:
        body += (f"C:Q1abc=\nP:{name}\nV:{version}\nA:x86_64\nS:1000\nI:2000\nT:the {name} package\n"
                 f"U:https://example.org/{name}\nL:MIT\no:{name}-src\nm:Someone <someone@example.org>\n"
                 f"F:usr/bin\nR:{name}\nZ:Q1def=\n\n")
    return body.encode()


def dist_info(name: str, version: str, license_: str = "MIT") -> bytes:
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {name} for tests\n"
            f"License: {license_}\nAuthor: A. Author\nAuthor-email: a@example.org\n\nThe long description.\n"
            "Name: not-a-header\n").encode()


def package_json(name: str, version: str, **extra) -> bytes:
    return json.dumps({"name": name, "version": version, **extra}).encode()


OS_RELEASE_DEBIAN = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
OS_RELEASE_ALPINE = b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n'


def layer_tar(files: dict[str, bytes] | None = None, *, whiteouts: tuple[str, ...] = (),
              opaque: tuple[str, ...] = (), dirs: tuple[str, ...] = (),
              links: dict[str, str] | None = None) -> bytes:
    """An uncompressed layer: `files` (path -> bytes, parents made), `dirs`,
    a `.wh.` entry for each of `whiteouts` and an opaque marker in each of
    `opaque`, and `links` (path -> symlink target), in the order a layer
    writer puts them (parents first)."""
    members: dict[str, tuple[str, bytes | None]] = {}

    def parents(path: str):
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            members.setdefault("/".join(parts[:depth]), ("dir", None))

    for path in dirs:
        parents(path)
        members[path] = ("dir", None)
    for path in opaque:
        parents(path + "/x")
        members[f"{path}/.wh..wh..opq" if path else ".wh..wh..opq"] = ("file", b"")
    for path in whiteouts:
        parents(path)
        parent, _, base = path.rpartition("/")
        members[f"{parent}/.wh.{base}" if parent else f".wh.{base}"] = ("file", b"")
    for path, data in (files or {}).items():
        parents(path)
        members[path] = ("file", data)
    for path, target in (links or {}).items():
        parents(path)
        members[path] = ("link", target.encode())
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members):
            kind, data = members[path]
            info = tarfile.TarInfo(path)
            info.mtime = 1_700_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data.decode()
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
