"""What one layer says about packages: the package databases it writes and
the paths it deletes. Read once per layer (by diff_id) and kept in the
index, then merged bottom-up into what a root filesystem holds.

A layer is read from its snapshot when the root has one (a directory walk
that opens only the databases: a Debian base's snapshot in ~0.1 s where
gunzipping its blob alone takes longer), else from its blob as a tar.
Both give the same facts (tests/attest/test_sbom_layers.py)."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from dataclasses import dataclass, field

from builder.attest.pkgdb import DbKind, Package, db_kind, parse_db, parse_os_release
from builder.errors import PybuildError
from cache.digest import Digest
from cache.sqlite import Connections
from runtime.whiteouts import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX, is_whiteout

# Bumped whenever a scan would find something else in the same layer: the
# facts of an older scanner are then read again, not trusted.
SCANNER_VERSION = 2
# Database files larger than this are not package databases anyone writes
# (a Debian status with 3,000 packages is ~3 MB).
MAX_DB_BYTES = 64 << 20
# What one scan (all the layers of one image or stage) may read: each
# package costs a few KB on its way to the SPDX document, and a database
# is input. A large Debian image lists ~3,000 packages, a large
# node_modules tree ~10,000.
MAX_SCAN_PACKAGES = 50_000
MAX_SCAN_BYTES = 256 << 20


class SbomTooLarge(PybuildError):
    """A scan past MAX_SCAN_PACKAGES or MAX_SCAN_BYTES."""


class ScanBudget:
    """What is left of one scan's packages and database bytes."""

    def __init__(self, packages: int = MAX_SCAN_PACKAGES, nbytes: int = MAX_SCAN_BYTES):
        self.packages, self.bytes = packages, nbytes

    def charge_bytes(self, where: str, size: int) -> None:
        self.bytes -= size
        if self.bytes < 0:
            raise SbomTooLarge(f"sbom: the package databases exceed the scan's limit of {MAX_SCAN_BYTES >> 20} MB "
                               f"(at {where})")

    def charge_packages(self, where: str, count: int) -> None:
        self.packages -= count
        if self.packages < 0:
            raise SbomTooLarge(f"sbom: the image lists more than {MAX_SCAN_PACKAGES} packages, the scan's limit "
                               f"(at {where})")


@dataclass
class LayerFacts:
    """`dbs`: database path -> the packages it lists; `os_release`: path ->
    its fields; `whiteouts`: paths the layer deletes from those below;
    `opaque`: directories whose lower contents it hides; `links`: database
    path -> the target of the symlink the layer writes there (resolved in
    the merged image: builder.attest.linked); `replaced`: database paths
    where the layer writes something else (a directory, a device, a file
    too large to be one...), which hides the lower database as a whiteout
    of that one path would. `budget` is charged for
    what is read (not kept)."""

    dbs: dict[str, list[Package]] = field(default_factory=dict)
    os_release: dict[str, dict[str, str]] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)
    budget: ScanBudget | None = field(default=None, compare=False, repr=False)

    def found(self, path: str, data: bytes) -> None:
        kind = db_kind(path)
        if kind == DbKind.OS_RELEASE:
            self.os_release[path] = parse_os_release(data)
        elif kind is not None:
            self.dbs[path] = parse_charged(kind, path, data, self.budget)

    def normalised(self) -> "LayerFacts":
        self.whiteouts.sort()
        self.opaque.sort()
        self.replaced.sort()
        self.dbs = dict(sorted(self.dbs.items()))
        self.os_release = dict(sorted(self.os_release.items()))
        self.links = dict(sorted(self.links.items()))
        return self

    def package_count(self) -> int:
        return sum(len(packages) for packages in self.dbs.values())

    def to_json(self) -> dict:
        return {"dbs": {path: [p.to_json() for p in packages] for path, packages in self.dbs.items()},
                "os_release": self.os_release, "whiteouts": self.whiteouts, "opaque": self.opaque,
                "links": self.links, "replaced": self.replaced}

    @classmethod
    def from_json(cls, body: dict) -> "LayerFacts":
        return cls({path: [Package.from_json(p) for p in packages] for path, packages in body["dbs"].items()},
                   body["os_release"], body["whiteouts"], body["opaque"], body["links"], body["replaced"])


def parse_charged(kind: str, path: str, data: bytes, budget: ScanBudget | None) -> list[Package]:
    """parse_db, its bytes and packages charged to `budget` (the packages
    bounded while they are parsed, not after)."""
    if budget is None:
        return parse_db(kind, path, data)
    budget.charge_bytes("/" + path, len(data))
    packages = parse_db(kind, path, data, limit=budget.packages + 1)
    budget.charge_packages("/" + path, len(packages))
    return packages


def _relative(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name.rstrip("/")


def facts_of_tar(stream, budget: ScanBudget | None = None) -> LayerFacts:
    """The facts of an uncompressed layer tar read from `stream` (read once,
    front to back: a blob being decompressed, or a file)."""
    facts = LayerFacts(budget=budget)
    # A hard link's data is its target's, read earlier in the stream: the
    # databases' bytes are kept for a link between two of them (a layer
    # writer archives the first name in full, as its snapshot shows both).
    read: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            path = _relative(member.name)
            parent, _, base = path.rpartition("/")
            if base == OPAQUE_MARKER:
                facts.opaque.append(parent)
            elif base.startswith(WHITEOUT_PREFIX):
                name = base[len(WHITEOUT_PREFIX):]
                facts.whiteouts.append(f"{parent}/{name}" if parent else name)
            elif db_kind(path) is None:
                continue
            elif member.isreg() and member.size <= MAX_DB_BYTES:
                read[path] = tar.extractfile(member).read()
                facts.found(path, read[path])
            elif member.islnk():
                if _relative(member.linkname) in read:
                    facts.found(path, read[_relative(member.linkname)])
            elif member.issym():
                facts.links[path] = member.linkname
            else:
                facts.replaced.append(path)
    return facts.normalised()


def facts_of_snapshot(fs, budget: ScanBudget | None = None) -> LayerFacts:
    """The facts of a snapshot directory (overlay's upperdir form: a
    whiteout is a 0/0 character device, an opaque directory carries
    overlay's opaque xattr), as runtime.layer reads it to write its tar."""
    facts = LayerFacts(budget=budget)
    top = os.open(fs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _walk(top, facts)
    finally:
        os.close(top)
    return facts.normalised()


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(top: int, facts: LayerFacts) -> None:
    # Depth first by directory fds, names relative to them: a layer's depth
    # is whatever its author chose (no recursion, no path past PATH_MAX).
    # One fd is held per level being walked.
    stack = [(top, iter(_listing(top, "", facts)))]
    try:
        while stack:
            fd, subdirs = stack[-1]
            found = next(subdirs, None)
            if found is None:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            name, path = found
            child = os.open(name, _OPEN_DIR, dir_fd=fd)
            try:
                if _is_opaque(child):
                    facts.opaque.append(path)
                listed = _listing(child, path + "/", facts)
            except BaseException:
                os.close(child)
                raise
            stack.append((child, iter(listed)))
    finally:
        for fd, _ in stack:
            if fd != top:
                os.close(fd)


def _listing(fd: int, prefix: str, facts: LayerFacts) -> list[tuple[str, str]]:
    """Read the databases, whiteouts and links of one directory; its
    subdirectories as (name, path)."""
    subdirs = []
    for name in sorted(os.listdir(fd)):
        path = prefix + name
        st = os.lstat(name, dir_fd=fd)
        if stat.S_ISDIR(st.st_mode):
            subdirs.append((name, path))
            if db_kind(path) is not None:
                facts.replaced.append(path)
        elif is_whiteout(st):
            facts.whiteouts.append(path)
        elif db_kind(path) is None:
            continue
        elif stat.S_ISREG(st.st_mode) and st.st_size <= MAX_DB_BYTES:
            _read_db(fd, name, path, facts)
        elif stat.S_ISLNK(st.st_mode):
            facts.links[path] = os.readlink(name, dir_fd=fd)
        else:
            facts.replaced.append(path)
    return subdirs


def _is_opaque(fd: int) -> bool:
    # The xattr runtime.layer reads for the same mark, so that both ways
    # of reading a layer agree.
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _read_db(dir_fd: int, name: str, path: str, facts: LayerFacts) -> None:
    # O_NOFOLLOW: the entry was a regular file when listed; a snapshot is
    # never written once committed, but a link must not send us elsewhere.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as file:
        facts.found(path, file.read(MAX_DB_BYTES + 1))


class FactsCache:
    """Layer facts by diff_id, in the `sbom_layer_facts` table of the
    root's index.db. A diff_id names a layer's exact bytes, so its facts
    never go stale; only a newer scanner (SCANNER_VERSION) reads it again.
    Rows are small (a Debian base's: ~40 KB) and outlive the layer until
    the table is trimmed (`forget`)."""

    def __init__(self, index_path):
        from cache.index import LAYER_FACTS_TABLE

        self._connections = Connections(index_path)
        self._connections.get().execute(LAYER_FACTS_TABLE)

    def get(self, diff_id: Digest) -> LayerFacts | None:
        row = self._connections.get().execute(
            "SELECT facts FROM sbom_layer_facts WHERE diff_id=? AND scanner=?",
            (str(diff_id), SCANNER_VERSION)).fetchone()
        return LayerFacts.from_json(json.loads(row[0])) if row else None

    def put(self, diff_id: Digest, facts: LayerFacts) -> None:
        db = self._connections.get()
        db.execute("INSERT OR REPLACE INTO sbom_layer_facts VALUES (?,?,?)",
                   (str(diff_id), SCANNER_VERSION, json.dumps(facts.to_json(), sort_keys=True)))

    def forget(self, keep: set[str]) -> int:
        """Drop the rows of layers not in `keep` (diff_ids as strings): for GC."""
        db = self._connections.get()
        rows = [r[0] for r in db.execute("SELECT diff_id FROM sbom_layer_facts").fetchall()]
        gone = [(d,) for d in rows if d not in keep]
        db.executemany("DELETE FROM sbom_layer_facts WHERE diff_id=?", gone)
        return len(gone)

    def close(self) -> None:
        self._connections.close()
