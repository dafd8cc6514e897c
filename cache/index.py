"""The cache index: what pybuild knows about its root, in one sqlite file.

sqlite gives crash safety (a transaction is all or nothing, even after
`kill -9`) and lets several pybuild processes share a root: WAL mode lets
readers go on while one writer commits, and a busy timeout queues writers.

Tables
  results    cache key -> the snapshot chain (bottom to top) it produced
  layers     snapshot + compression -> the layer blob made from it
  bases      chain id of a base layer -> the snapshot it was extracted to
  resolved   image reference + platform -> manifest digest (no network on rebuilds)
  resolved_names  image reference -> the digest it named (an index's), for provenance
  images     image name -> manifest descriptor (the local image store)
  builds     the last build of a Dockerfile + target: vertex keys, for --explain
  sbom_layer_facts  diff_id -> the packages the layer writes (builder/attest/layerfacts.py)
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cache.digest import Digest
from cache.sqlite import Connections

# The SBOM scanner's per-layer facts, kept by diff_id (builder.attest.layerfacts.FactsCache).
LAYER_FACTS_TABLE = ("CREATE TABLE IF NOT EXISTS sbom_layer_facts ("
                     "diff_id TEXT PRIMARY KEY, scanner INTEGER NOT NULL, facts TEXT NOT NULL)")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, chain TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    snapshot TEXT NOT NULL, compression TEXT NOT NULL, diff_id TEXT NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, media_type TEXT NOT NULL, empty INTEGER NOT NULL,
    PRIMARY KEY (snapshot, compression));
CREATE TABLE IF NOT EXISTS bases (
    chain_id TEXT PRIMARY KEY, snapshot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resolved (
    ref TEXT NOT NULL, platform TEXT NOT NULL, manifest TEXT NOT NULL,
    PRIMARY KEY (ref, platform));
CREATE TABLE IF NOT EXISTS resolved_names (
    ref TEXT PRIMARY KEY, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY, manifest TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS builds (
    build_id TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL);
""" + LAYER_FACTS_TABLE + ";\n"


@dataclass(frozen=True)
class CachedResult:
    key: str
    chain: tuple[str, ...]
    created: float


@dataclass(frozen=True)
class LayerRecord:
    snapshot: str
    compression: str
    diff_id: Digest
    digest: Digest
    size: int
    media_type: str
    empty: bool


class Index:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._connections = Connections(self.path)
        # executescript commits on its own; CREATE IF NOT EXISTS is idempotent.
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        self._connections.close()

    # results -------------------------------------------------------------
    def get_result(self, key: str) -> CachedResult | None:
        row = self._db().execute("SELECT chain, created FROM results WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return CachedResult(key, tuple(json.loads(row[0])), row[1])

    def put_result(self, key: str, chain: tuple[str, ...], created: float | None = None) -> CachedResult:
        """Record a result; when another process recorded the same key first,
        its result wins and is returned (the caller drops its own copy).
        `created`: when the result was first made (an imported cache keeps
        the exporter's time, so the image config comes out identical)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO results(key, chain, created, last_used) VALUES (?,?,?,?)",
                (key, json.dumps(list(chain)), now if created is None else created, now),
            )
        return self.get_result(key)

    def touch_results(self, keys: list[str]) -> None:
        now = time.time()
        with self._tx() as db:
            db.executemany("UPDATE results SET last_used=? WHERE key=?", [(now, k) for k in keys])

    def drop_result(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM results WHERE key=?", (key,))

    def retire_result(self, key: str, chain: tuple[str, ...]) -> None:
        """Move the result recorded for `key`, if it is still `chain`, to a
        key nothing looks up, to make room for a forced step's new result.
        As BuildKit's cache keeps the record a --no-cache run replaced, the
        old chain stays referred to (a running build may use it) until GC
        drops it, least recently used first."""
        retired = f"{key}#replaced-{os.urandom(8).hex()}"
        with self._tx() as db:
            db.execute("UPDATE results SET key=? WHERE key=? AND chain=?", (retired, key, json.dumps(list(chain))))

    def all_results(self) -> list[CachedResult]:
        rows = self._db().execute("SELECT key, chain, created FROM results").fetchall()
        return [CachedResult(k, tuple(json.loads(c)), t) for k, c, t in rows]

    # layers --------------------------------------------------------------
    def get_layer(self, snapshot: str, compression: str) -> LayerRecord | None:
        row = self._db().execute(
            "SELECT diff_id, digest, size, media_type, empty FROM layers WHERE snapshot=? AND compression=?",
            (snapshot, compression),
        ).fetchone()
        if row is None:
            return None
        return LayerRecord(snapshot, compression, Digest.parse(row[0]), Digest.parse(row[1]), row[2], row[3], bool(row[4]))

    def layers_of(self, snapshot: str) -> list[LayerRecord]:
        rows = self._db().execute(
            "SELECT compression, diff_id, digest, size, media_type, empty FROM layers WHERE snapshot=?", (snapshot,)
        ).fetchall()
        return [LayerRecord(snapshot, c, Digest.parse(d), Digest.parse(g), s, m, bool(e)) for c, d, g, s, m, e in rows]

    def put_layer(self, record: LayerRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO layers VALUES (?,?,?,?,?,?,?)",
                (record.snapshot, record.compression, str(record.diff_id), str(record.digest),
                 record.size, record.media_type, int(record.empty)),
            )

    def all_layers(self) -> list[LayerRecord]:
        rows = self._db().execute("SELECT snapshot, compression, diff_id, digest, size, media_type, empty FROM layers").fetchall()
        return [LayerRecord(s, c, Digest.parse(d), Digest.parse(g), z, m, bool(e)) for s, c, d, g, z, m, e in rows]

    # base layer snapshots ------------------------------------------------
    def get_base(self, chain_id: Digest) -> str | None:
        row = self._db().execute("SELECT snapshot FROM bases WHERE chain_id=?", (str(chain_id),)).fetchone()
        return row[0] if row else None

    def put_base(self, chain_id: Digest, snapshot: str) -> str:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO bases VALUES (?,?)", (str(chain_id), snapshot))
        return self.get_base(chain_id)

    def all_bases(self) -> list[tuple[str, str]]:
        """(chain id, snapshot) of every extracted base or imported layer."""
        return [tuple(row) for row in self._db().execute("SELECT chain_id, snapshot FROM bases").fetchall()]

    def drop_base(self, chain_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM bases WHERE chain_id=?", (str(chain_id),))

    def drop_layer(self, snapshot: str, compression: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM layers WHERE snapshot=? AND compression=?", (snapshot, compression))

    def forget_snapshots(self, snapshots: list[str]) -> None:
        """Drop what the index says about snapshots GC removes."""
        with self._tx() as db:
            db.executemany("DELETE FROM layers WHERE snapshot=?", [(s,) for s in snapshots])
            db.executemany("DELETE FROM bases WHERE snapshot=?", [(s,) for s in snapshots])

    def results_by_age(self) -> list[tuple[str, tuple[str, ...], float]]:
        """(key, chain, last_used) of every result, least recently used first."""
        rows = self._db().execute("SELECT key, chain, last_used FROM results ORDER BY last_used").fetchall()
        return [(k, tuple(json.loads(c)), t) for k, c, t in rows]

    def drop_results(self, keys: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM results WHERE key=?", [(k,) for k in keys])

    # resolved references -------------------------------------------------
    def get_resolved(self, ref: str, platform: str) -> Digest | None:
        row = self._db().execute("SELECT manifest FROM resolved WHERE ref=? AND platform=?", (ref, platform)).fetchone()
        return Digest.parse(row[0]) if row else None

    def put_resolved(self, ref: str, platform: str, manifest: Digest) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO resolved VALUES (?,?,?)", (ref, platform, str(manifest)))

    def get_resolved_name(self, ref: str) -> Digest | None:
        row = self._db().execute("SELECT digest FROM resolved_names WHERE ref=?", (ref,)).fetchone()
        return Digest.parse(row[0]) if row else None

    def put_resolved_name(self, ref: str, digest: Digest) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO resolved_names VALUES (?,?)", (ref, str(digest)))

    def resolved_manifests(self) -> list[Digest]:
        rows = self._db().execute("SELECT manifest FROM resolved").fetchall()
        return [Digest.parse(m) for (m,) in rows]

    # images --------------------------------------------------------------
    def get_image(self, name: str) -> Digest | None:
        row = self._db().execute("SELECT manifest FROM images WHERE name=?", (name,)).fetchone()
        return Digest.parse(row[0]) if row else None

    def put_image(self, name: str, manifest: Digest) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO images VALUES (?,?,?)", (name, str(manifest), time.time()))

    def remove_image(self, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM images WHERE name=?", (name,)).rowcount > 0

    def images(self) -> list[tuple[str, Digest, float]]:
        rows = self._db().execute("SELECT name, manifest, created FROM images ORDER BY name").fetchall()
        return [(n, Digest.parse(m), c) for n, m, c in rows]

    # builds (for --explain) ----------------------------------------------
    def get_build(self, build_id: str) -> dict | None:
        row = self._db().execute("SELECT record FROM builds WHERE build_id=?", (build_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_build(self, build_id: str, record: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO builds VALUES (?,?,?)", (build_id, json.dumps(record), time.time()))
