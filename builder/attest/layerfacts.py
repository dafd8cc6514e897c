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
from cache.digest import Digest
from cache.sqlite import Connections
from runtime.whiteouts import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX, is_whiteout

# Bumped whenever a scan would find something else in the same layer: the
# facts of an older scanner are then read again, not trusted.
SCANNER_VERSION = 1
# Database files larger than this are not package databases anyone writes
# (a Debian status with 3,000 packages is ~3 MB).
_MAX_DB_BYTES = 64 << 20


@dataclass
class LayerFacts:
    """`dbs`: database path -> the packages it lists; `os_release`: path ->
    its fields; `whiteouts`: paths the layer deletes from those below;
    `opaque`: directories whose lower contents it hides."""

    dbs: dict[str, list[Package]] = field(default_factory=dict)
    os_release: dict[str, dict[str, str]] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)

    def found(self, path: str, data: bytes) -> None:
        kind = db_kind(path)
        if kind == DbKind.OS_RELEASE:
            self.os_release[path] = parse_os_release(data)
        elif kind is not None:
            self.dbs[path] = parse_db(kind, path, data)

    def normalised(self) -> "LayerFacts":
        self.whiteouts.sort()
        self.opaque.sort()
        self.dbs = dict(sorted(self.dbs.items()))
        self.os_release = dict(sorted(self.os_release.items()))
        return self

    def to_json(self) -> dict:
        return {"dbs": {path: [p.to_json() for p in packages] for path, packages in self.dbs.items()},
                "os_release": self.os_release, "whiteouts": self.whiteouts, "opaque": self.opaque}

    @classmethod
    def from_json(cls, body: dict) -> "LayerFacts":
        return cls({path: [Package.from_json(p) for p in packages] for path, packages in body["dbs"].items()},
                   body["os_release"], body["whiteouts"], body["opaque"])


def _relative(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name.rstrip("/")


def facts_of_tar(stream) -> LayerFacts:
    """The facts of an uncompressed layer tar read from `stream` (read once,
    front to back: a blob being decompressed, or a file)."""
    facts = LayerFacts()
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
            elif member.isreg() and member.size <= _MAX_DB_BYTES:
                read[path] = tar.extractfile(member).read()
                facts.found(path, read[path])
            elif member.islnk() and _relative(member.linkname) in read:
                facts.found(path, read[_relative(member.linkname)])
    return facts.normalised()


def facts_of_snapshot(fs) -> LayerFacts:
    """The facts of a snapshot directory (overlay's upperdir form: a
    whiteout is a 0/0 character device, an opaque directory carries
    overlay's opaque xattr), as runtime.layer reads it to write its tar."""
    facts = LayerFacts()
    _walk(os.fsdecode(fs), facts)
    return facts.normalised()


def _walk(top: str, facts: LayerFacts) -> None:
    # A stack, not recursion: a layer's depth is whatever its author chose.
    pending = [(top, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            listed = list(entries)
        for entry in listed:
            path = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if _is_opaque(entry.path):
                    facts.opaque.append(path)
                pending.append((entry.path, path + "/"))
            elif entry.is_file(follow_symlinks=False):
                if db_kind(path) is not None:
                    _read_db(entry, path, facts)
            elif not entry.is_symlink() and is_whiteout(entry.stat(follow_symlinks=False)):
                facts.whiteouts.append(path)


def _is_opaque(path: str) -> bool:
    # The xattr runtime.layer reads for the same mark, so that both ways
    # of reading a layer agree.
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _read_db(entry: os.DirEntry, path: str, facts: LayerFacts) -> None:
    st = entry.stat(follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_DB_BYTES:
        return
    # O_NOFOLLOW: the entry was a regular file when listed; a snapshot is
    # never written once committed, but a link must not send us elsewhere.
    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        facts.found(path, file.read())


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
