"""The SBOM attestation: an SPDX 2.3 JSON document of a root filesystem's
packages, wrapped in an in-toto statement (predicate type
https://spdx.dev/Document), as BuildKit attaches the one its syft-based
scanner (docker/buildkit-syft-scanner) writes.

What follows syft's SPDX conventions: the document describes a directory
root package that CONTAINS every package, named as BuildKit 0.13 has the
scanner name it: it mounts the final stage at /run/src/core/sbom and each
stage scan-stage=true scans at /run/src/extras/sbom-STAGE (measured with
docker 26 and a generator image reporting its environment);
package URLs as syft writes them (purl spec canonical form: qualifiers
sorted, components percent-encoded); `sourceInfo` names the database;
and the layer that introduced a package is the package's `comment`,
"layerID: sha256:...", where BuildKit documents it (docs/attestations/
sbom.md: "Entries in files and packages contain a comment field with the
digest of the layer which introduced it"). Left out: syft's `files`
entries and CPEs (guesses from names, which syft itself marks as such).

The document is a function of its packages, subjects and time: its
namespace's UUID is derived from the content, and `created` is the
build's SOURCE_DATE_EPOCH when it has one."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from typing import Sequence

from builder.attest.intoto import statement as intoto_statement
from builder.attest.pkgdb import DbKind
from builder.attest.purl import package_url, quote_part
from builder.attest.spdx_licenses import spdx_exception, spdx_license
from builder.attest.sbom_scan import FoundPackage, LayerRef, LayerScanner, RootfsPackages
from builder.image import Image, canonical_json
from cache.digest import Digest

SPDX_PREDICATE = "https://spdx.dev/Document"
CORE_NAME = "/run/src/core/sbom"
STAGE_NAME = "/run/src/extras/sbom-{stage}"
TOOL = "pybuild"
_NOASSERTION = "NOASSERTION"

_SOURCE_INFO = {
    DbKind.DPKG: "acquired package info from DPKG DB: ",
    DbKind.APK: "acquired package info from APK DB: ",
    DbKind.PYTHON: "acquired package info from installed python package manifest file: ",
    DbKind.NPM: "acquired package info from installed node module manifest file: ",
}
_PURL_TYPE = {DbKind.DPKG: "deb", DbKind.APK: "apk", DbKind.PYTHON: "pypi", DbKind.NPM: "npm"}
# A declared license goes in as written only when it reads as an SPDX
# license expression; anything else (prose, a URL) is NOASSERTION.
# How SPDX tools split "Person: NAME (EMAIL)": the name is what precedes
# the last parenthesis pair, or all of it when it ends in none.
_ACTOR = re.compile(r"Person:\s*(?:(.*)\((.*)\)|(.*))")


def purl(found: FoundPackage, distro: tuple[str, str]) -> str:
    package = found.package
    kind = _PURL_TYPE[package.kind]
    name = package.name
    namespace = ""
    qualifiers: dict[str, str] = {}
    distro_id, distro_version = distro
    if package.kind in (DbKind.DPKG, DbKind.APK):
        namespace = distro_id or ("debian" if package.kind == DbKind.DPKG else "alpine")
        if package.arch:
            qualifiers["arch"] = package.arch
        if package.upstream:
            qualifiers["upstream"] = package.upstream
        if distro_id:
            qualifiers["distro"] = f"{distro_id}-{distro_version}" if distro_version else distro_id
    elif package.kind == DbKind.PYTHON:
        # The purl spec's pypi names: lower case, "_" as "-".
        name = re.sub(r"[-_.]+", "-", name).lower()
    elif package.kind == DbKind.NPM and name.startswith("@") and "/" in name:
        namespace, _, name = name.partition("/")
    path = "/".join(quote_part(part) for part in (namespace, name) if part)
    return package_url(kind, path, package.version or "", qualifiers.items())


def _spdx_id(*parts: str) -> str:
    # SPDX identifiers allow letters, digits, "." and "-" only.
    return "-".join(filter(None, (re.sub(r"[^A-Za-z0-9.-]+", "-", part).strip("-") for part in parts)))


def _who(text: str) -> str:
    """A database's "Name <address>" as SPDX's "Person: Name (address)"
    (dpkg and apk name people; a team reads as one)."""
    text = " ".join(text.split())
    match = re.fullmatch(r"(.*?)\s*<([^<>]*)>", text)
    actor = f"Person: {match.group(1)} ({match.group(2)})" if match else f"Person: {text}"
    # SPDX's actor needs a name: an address alone (`<team@example.org>`,
    # which dpkg accepts) or nothing at all is no assertion.
    parts = _ACTOR.fullmatch(actor)
    name = parts.group(1) if parts.group(3) is None else parts.group(3)
    return actor if name.strip() else _NOASSERTION


def _license(text: str) -> str:
    """`text` when it is an expression of SPDX license-list identifiers
    (their case as the list spells them), else NOASSERTION: a word SPDX does
    not know (npm's UNLICENSED, "Proprietary") would make the document invalid."""
    words = text.split()
    if not words or len(words) % 2 == 0:
        return _NOASSERTION
    out = []
    for position, word in enumerate(words):
        if position % 2:
            if word not in ("AND", "OR", "WITH") or (word == "WITH" and words[position - 2:position - 1] == ["WITH"]):
                return _NOASSERTION
            out.append(word)
            continue
        after_with = position > 0 and words[position - 1] == "WITH"
        known = spdx_exception(word) if after_with else spdx_license(word)
        if known is None:
            return _NOASSERTION
        out.append(known)
    return " ".join(out)


def _package(found: FoundPackage, distro) -> dict:
    package = found.package
    locator = purl(found, distro)
    hashed = hashlib.sha256(f"{locator}\0{package.db}".encode()).hexdigest()[:16]
    body = {
        "SPDXID": _spdx_id("SPDXRef-Package", _PURL_TYPE[package.kind], package.name, hashed),
        "name": package.name,
        "versionInfo": package.version,
        "supplier": _who(package.supplier),
        "originator": _who(package.supplier),
        "downloadLocation": _NOASSERTION,
        "filesAnalyzed": False,
        "sourceInfo": _SOURCE_INFO[package.kind] + package.db,
        "licenseConcluded": _NOASSERTION,
        "licenseDeclared": _license(package.license),
        "copyrightText": _NOASSERTION,
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": locator}],
    }
    if package.description:
        body["description"] = package.description
    if package.homepage.startswith(("http://", "https://")):
        body["homepage"] = package.homepage
    if found.layer is not None:
        body["comment"] = f"layerID: {found.layer}"
    return body


def _created(epoch: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if epoch is None else epoch))


def spdx_document(found: RootfsPackages, *, name: str = CORE_NAME, epoch: int | None = None) -> dict:
    """The SPDX 2.3 document of `found`, named `name`."""
    root_id = _spdx_id("SPDXRef-DocumentRoot-Directory", name)
    packages = sorted((_package(f, found.distro) for f in found.packages), key=lambda p: p["SPDXID"])
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relatedSpdxElement": root_id,
                      "relationshipType": "DESCRIBES"}]
    relationships += [{"spdxElementId": root_id, "relatedSpdxElement": p["SPDXID"],
                       "relationshipType": "CONTAINS"} for p in packages]
    root = {"SPDXID": root_id, "name": name, "downloadLocation": _NOASSERTION, "filesAnalyzed": False,
            "supplier": _NOASSERTION, "licenseConcluded": _NOASSERTION, "licenseDeclared": _NOASSERTION,
            "copyrightText": _NOASSERTION, "primaryPackagePurpose": "FILE"}
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "creationInfo": {"created": _created(epoch), "creators": [f"Organization: {TOOL}", f"Tool: {TOOL}"]},
        "packages": [root, *packages],
        "relationships": relationships,
    }
    # SPDX wants a namespace unique to this document: one derived from
    # everything else in it is, and keeps the bytes reproducible.
    content = uuid.UUID(hashlib.sha256(canonical_json(document)).hexdigest()[:32], version=4)
    document["documentNamespace"] = f"https://spdx.org/spdxdocs/{TOOL}{quote_part(name).replace('%2F', '/')}-{content}"
    return document


def statement(document: dict, subject_digests: Sequence[tuple[str, Digest]]) -> bytes:
    """The in-toto statement carrying `document` about each (name, digest)."""
    subjects = [{"name": name, "digest": {digest.algorithm: digest.hex}} for name, digest in subject_digests]
    return intoto_statement(SPDX_PREDICATE, document, subjects)


def _refs(scanner: LayerScanner, image_or_layers) -> list[LayerRef]:
    if isinstance(image_or_layers, Image):
        return scanner.refs_of_image(image_or_layers)
    return list(image_or_layers)


def sbom_statements(scanner: LayerScanner, image_or_layers, *, subject_digests: Sequence[tuple[str, Digest]],
                    epoch: int | None = None, stages: Sequence[tuple[str, Sequence[LayerRef]]] = ()
                    ) -> list[tuple[str, bytes]]:
    """The SBOM statements of an image (an `Image` in the store, or its
    layers as LayerRefs, bottom first), and with `stages` (name, layers)
    of the build stages scan-stage=true scans too: one statement each, all
    about the same subjects, as BuildKit 0.13 stores them (one in-toto
    layer each in the attestation manifest, the image's first, then the
    stages'). Returns (name, statement bytes), the image's under "sbom", a
    stage's under "sbom-STAGE"."""
    out = [("sbom", statement(spdx_document(scanner.scan(_refs(scanner, image_or_layers)), epoch=epoch),
                              subject_digests))]
    for stage, layers in stages:
        document = spdx_document(scanner.scan(list(layers)), name=STAGE_NAME.format(stage=stage), epoch=epoch)
        out.append((f"sbom-{stage}", statement(document, subject_digests)))
    return out


def sbom_statement(scanner: LayerScanner, image_or_layers, *, subject_digests: Sequence[tuple[str, Digest]],
                   epoch: int | None = None) -> bytes:
    """The image's own SBOM statement (sbom_statements without stages)."""
    return sbom_statements(scanner, image_or_layers, subject_digests=subject_digests, epoch=epoch)[0][1]


def stored_image_packages(worker, name: str) -> RootfsPackages:
    """The packages of an image in the root's local store (by name or ID)."""
    from builder.root.images import find

    scanner = LayerScanner.for_worker(worker)
    try:
        return scanner.scan(scanner.refs_of_image(find(worker, name).image))
    finally:
        scanner.close()


def stored_image_sbom(worker, name: str, *, epoch: int | None = None) -> bytes:
    """The SBOM statement of an image in the local store, its manifest as
    the subject (for tests, and for a command that scans a stored image)."""
    from builder.root.images import find

    stored = find(worker, name)
    scanner = LayerScanner.for_worker(worker)
    try:
        return sbom_statement(scanner, stored.image, epoch=epoch,
                              subject_digests=[(f"pkg:docker/{stored.name}", stored.image.manifest.digest)])
    finally:
        scanner.close()
