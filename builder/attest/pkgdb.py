"""Package databases as they sit in a root filesystem: which paths are one,
and what packages each lists.

A *database* here is one file whose whole content a layer replaces when it
writes the file: dpkg's status (or one file of distroless's status.d),
apk's installed, a Python distribution's METADATA / PKG-INFO, an npm
package's package.json below node_modules, and os-release (which names the
distribution a deb or apk package URL carries). Paths are relative to the
filesystem's root, without a leading slash, as layer tars name them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass


class DbKind:
    DPKG = "dpkg"
    APK = "apk"
    PYTHON = "python"
    NPM = "npm"
    OS_RELEASE = "os-release"


_DPKG_STATUS = "var/lib/dpkg/status"
_DPKG_STATUS_D = "var/lib/dpkg/status.d/"
_APK_INSTALLED = "lib/apk/db/installed"
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


@dataclass(frozen=True)
class Package:
    """One package a database lists. `kind` is the database's kind; `db`
    the database's path (with a leading slash, as SBOMs show it)."""

    kind: str
    name: str
    version: str
    db: str
    arch: str = ""
    upstream: str = ""     # deb Source / apk origin, with "@version" when that differs
    license: str = ""
    supplier: str = ""     # a person or organisation, as the database names it
    homepage: str = ""
    description: str = ""

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value}

    @classmethod
    def from_json(cls, body: dict) -> "Package":
        return cls(**body)


def db_kind(path: str) -> str | None:
    """The kind of database `path` (relative, no leading slash) is, if any."""
    if path == _DPKG_STATUS:
        return DbKind.DPKG
    if path.startswith(_DPKG_STATUS_D):
        rest = path[len(_DPKG_STATUS_D):]
        # Distroless keeps each package's files list beside its paragraph.
        return DbKind.DPKG if rest and "/" not in rest and not rest.endswith(".md5sums") else None
    if path == _APK_INSTALLED:
        return DbKind.APK
    if path.endswith((".dist-info/METADATA", ".egg-info/PKG-INFO")) or path.endswith(".egg-info"):
        return DbKind.PYTHON
    if path.endswith("/package.json") and _is_npm_package_dir(path):
        return DbKind.NPM
    if path in _OS_RELEASE:
        return DbKind.OS_RELEASE
    return None


def _is_npm_package_dir(path: str) -> bool:
    # node_modules/NAME/package.json or node_modules/@SCOPE/NAME/package.json;
    # a package.json deeper inside a package describes no installed package.
    parts = path.split("/")
    if len(parts) >= 3 and parts[-3] == "node_modules":
        return not parts[-2].startswith("@")
    return len(parts) >= 4 and parts[-4] == "node_modules" and parts[-3].startswith("@")


def parse_db(kind: str, path: str, data: bytes, limit: int | None = None) -> list[Package]:
    """The packages one database file lists (none when it is unreadable: a
    damaged file hides nothing below it, so it still replaces the lower
    layers' version of the same path); at most `limit` of them."""
    text = data.decode("utf-8", errors="replace")
    db = "/" + path
    if kind == DbKind.DPKG:
        return _dpkg(text, db, limit)
    if kind == DbKind.APK:
        return _apk(text, db, limit)
    if kind == DbKind.PYTHON:
        return _python(text, db)
    if kind == DbKind.NPM:
        return _npm(text, db)
    return []


def _lines(text: str) -> list[str]:
    # dpkg, apk and the core metadata readers break lines at "\n" alone;
    # str.splitlines() also breaks at U+2028, \v, \x1c... which would let a
    # field's value forge lines (a Status, a whole paragraph) they never see.
    return [line.removesuffix("\r") for line in text.split("\n")]


def _blank(line: str) -> bool:
    return not line.strip(" \t")


def _paragraphs(text: str):
    current: list[str] = []
    for line in _lines(text):
        if not _blank(line):
            current.append(line)
        elif current:
            yield current
            current = []
    if current:
        yield current


def _deb822(lines: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if key is not None:
                fields[key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        # deb822 field names are case-insensitive (dpkg-query reads `package:`).
        key = key.strip(" \t").lower()
        fields[key] = value.strip(" \t")
    return fields


# dpkg's states in which a package's files are on disk (config-files and
# not-installed leave none: `dpkg-query -W` lists those with no version
# or as "deinstall ... config-files").
_DPKG_GONE = ("not-installed", "config-files")


def _dpkg(text: str, db: str, limit: int | None) -> list[Package]:
    found: list[Package] = []
    for paragraph in _paragraphs(text):
        if len(found) == limit:
            break
        fields = _deb822(paragraph)
        name, version = fields.get("package", ""), fields.get("version", "")
        status = fields.get("status", "").split()
        if not name or not version or (status and status[-1] in _DPKG_GONE):
            continue
        found.append(Package(DbKind.DPKG, name, version, db, arch=fields.get("architecture", ""),
                             upstream=_dpkg_source(fields.get("source", ""), name, version),
                             supplier=fields.get("maintainer", ""), homepage=fields.get("homepage", ""),
                             description=fields.get("description", "").split("\n")[0]))
    return found


def _dpkg_source(source: str, name: str, version: str) -> str:
    """dpkg's `Source: NAME (VERSION)` as a purl's upstream qualifier:
    absent when it names the package itself at its own version."""
    match = re.fullmatch(r"(\S+)(?:\s+\((\S+)\))?", source)
    if not match:
        return ""
    source_name, source_version = match.group(1), match.group(2) or ""
    if source_version and source_version != version:
        return f"{source_name}@{source_version}"
    return "" if source_name == name else source_name


def _apk(text: str, db: str, limit: int | None) -> list[Package]:
    found: list[Package] = []
    for paragraph in _paragraphs(text):
        if len(found) == limit:
            break
        fields: dict[str, str] = {}
        for line in paragraph:
            key, sep, value = line.partition(":")
            if sep and len(key) == 1 and key not in fields:  # R:/Z: repeat per file: keep the header's
                fields[key] = value
        if not fields.get("P") or not fields.get("V"):
            continue
        found.append(Package(DbKind.APK, fields["P"], fields["V"], db, arch=fields.get("A", ""),
                             upstream=fields.get("o", ""), license=fields.get("L", ""),
                             supplier=fields.get("m", ""), homepage=fields.get("U", ""),
                             description=fields.get("T", "")))
    return found


def _python(text: str, db: str) -> list[Package]:
    # Core metadata is RFC 822 headers, then (METADATA 2.1+) a body.
    headers: dict[str, str] = {}
    for line in _lines(text):
        if _blank(line):
            break
        if line[:1] in (" ", "\t"):
            continue
        key, sep, value = line.partition(":")
        key = key.strip().lower()   # RFC 822 header names are case-insensitive
        if sep and key not in headers:
            headers[key] = value.strip()
    name, version = headers.get("name", ""), headers.get("version", "")
    if not name or not version:
        return []
    license_ = headers.get("license-expression") or headers.get("license", "")
    return [Package(DbKind.PYTHON, name, version, db, license=license_ if license_ != "UNKNOWN" else "",
                    supplier=_person(headers.get("author", ""), headers.get("author-email", "")),
                    homepage=headers.get("home-page", ""), description=headers.get("summary", ""))]


def _person(name: str, email: str) -> str:
    if name and email and "<" not in email:
        return f"{name} <{email}>"
    return email or name


def _npm(text: str, db: str) -> list[Package]:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # nesting deeper than the interpreter's stack
        return []
    if not isinstance(body, dict):
        return []
    name, version = body.get("name"), body.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return []
    license_ = body.get("license")
    if isinstance(license_, dict):
        license_ = license_.get("type")
    author = body.get("author")
    if isinstance(author, dict):
        author = _person(str(author.get("name", "")), str(author.get("email", "")))
    homepage = body.get("homepage")
    description = body.get("description")
    return [Package(DbKind.NPM, name, version, db, license=license_ if isinstance(license_, str) else "",
                    supplier=author if isinstance(author, str) else "",
                    homepage=homepage if isinstance(homepage, str) else "",
                    description=description if isinstance(description, str) else "")]


def parse_os_release(data: bytes) -> dict[str, str]:
    """os-release's KEY=VALUE lines (shell quoting, as os-release(5) allows)."""
    fields = {}
    for line in _lines(data.decode("utf-8", errors="replace")):
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        fields[key] = value
    return fields
