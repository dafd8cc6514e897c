"""The no-op memo's fast path: finish an identical, unchanged build from its
memo (builder/root/memo.py) before the CLI is even imported (builder.entry).

A replay does what a full build does besides the build itself: it reads the
`--secret` and `--ssh` sources the same way (a missing one sends the command
to the full build, which reports it), holds the root's shared lock while it
checks and answers (so prune cannot remove what it vouches for), and runs
automatic GC when a full build would. It does not open the root, which
takes back what a pybuild killed by SIGKILL left (builder/root/reclaim.py):
when a lease on the root is dead, the full build runs, and reclaims.

Every import here is paid by each replay: what only some replays need is
imported where it is needed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from builder.config import default_root, load_settings
from builder.root import memo
from builder.root.lock import RootLock


def _settings(argv: list[str]):
    """The settings exactly as builder.cli resolves them; only the long
    forms are read here (anything else falls back to the full CLI, whose
    memo then lives where it belongs and is simply not found)."""
    flags = {}
    for i, arg in enumerate(argv):
        for name in ("--root", "--config"):
            if arg == name and i + 1 < len(argv):
                flags[name] = argv[i + 1]
            elif arg.startswith(name + "="):
                flags[name] = arg.split("=", 1)[1]
    return load_settings(flags.get("--config"), os.environ, root=flags.get("--root"))


def _store_agrees(root: Path, body: dict) -> bool:
    from cache.digest import Digest
    from cache.index import Index
    from cache.store import ContentStore

    store = ContentStore(root / "content")
    if not all(store.has(Digest.parse(d)) for d in (body["manifest"], body["image_id"], *body["blobs"])):
        return False
    index = Index(root / "index.db")
    try:
        for ref, platform, digest in body["resolved"]:
            if str(index.get_resolved(ref, platform)) != digest:
                return False
        for tag in body["tags"]:
            if str(index.get_image(tag)) != body["manifest"]:
                return False
        # As the solver does for a cached build: one lookup per platform, of
        # the target's key, whose snapshots must all be there
        # (Snapshotter.exists, without importing the runtime: ~13 ms); and
        # it counts as a use.
        for target in body["targets"]:
            cached = index.get_result(target)
            if cached is None or not all((root / "snapshots" / s / "fs").is_dir() for s in cached.chain):
                return False
        index.touch_results(body["targets"])
    finally:
        index.close()
    return True


def _sources_present(body: dict) -> bool:
    """The --secret and --ssh sources as a full build reads them first."""
    if not (body["secrets"] or body["ssh"]):
        return True
    from builder.errors import PybuildError
    from builder.solver.secrets import parse_secrets, parse_ssh

    try:
        parse_secrets(body["secrets"])
        parse_ssh(body["ssh"])
    except PybuildError:
        return False  # the full build reports it
    return True


def replay(argv: list[str]) -> int | None:
    """Finish an identical, unchanged build from its memo: the exit status,
    or None to run the build."""
    started = time.monotonic()
    lock = None
    try:
        settings = _settings(argv)
        root = settings.root or default_root()
        config_path = str(settings.config.path) if settings.config.path else None
        key = memo.memo_key(argv, os.getcwd(), dict(os.environ), sys.stderr.isatty())
        try:
            body = json.loads((root / "memo" / key).read_text())
        except FileNotFoundError:
            return None
        if (body.get("version") != memo.MEMO_VERSION or body["root"] != str(root) or body["config"] != config_path
                or body["code"] != memo.code_fingerprint() or not _sources_present(body) or _left_over(root)):
            return None
        lock = RootLock(root, exclusive=False)  # as a build: prune waits, and we wait for prune
        if not (memo.unchanged(body["paths"]) and _store_agrees(root, body)):
            lock.release()
            return None
        if body["iidfile"]:
            Path(body["iidfile"]).write_text(body["image_id"])
    except Exception:  # a memo is only a shortcut: anything odd means "build"
        if lock is not None:
            lock.release()
        return None
    from builder.solver.progress import make_reporter

    reporter = make_reporter("quiet" if body["quiet"] else body["progress"])
    try:
        reporter.set_names({vertex: _Named(name) for vertex, name in body["steps"]})
        for text in body["warnings"]:
            reporter.warning(text)
        for vertex, _ in body["steps"]:
            reporter.planned(vertex, True)
        lock.release()
        if not _collect(root, settings, reporter):
            return 1
        if not body["quiet"]:
            memo.announce(reporter, body["tags"], body["image_id"], time.monotonic() - started)
    finally:
        lock.release()
        reporter.close()
    if body["quiet"]:
        print(body["image_id"])
    return 0


def _left_over(root: Path) -> bool:
    """Whether a dead process's lease on the root (runtime.snapshot's
    lease_dir, not imported: ~13 ms) says it may have left something."""
    from runtime.lease import Leases

    return bool(Leases(root / "snapshots" / ".leases").dead())


def _collect(root: Path, settings, reporter) -> bool:
    """Automatic GC, as after a full build (builder.root.gc.auto_gc). Most of
    the time one stat says that nothing is due, or a statvfs that the root
    cannot be over its size; the root is opened (which costs more than the
    replay) only for the rules that need to look inside it."""
    from builder.root.gc import apply_rules, due_rules

    try:
        rules = due_rules(root, settings.config.gc_policy)
        if rules:
            from builder.root.worker import Worker

            worker = Worker.open(root, settings.isolation)
            try:
                apply_rules(worker, rules, reporter)
            finally:
                worker.close()
    except Exception as exc:  # noqa: BLE001 - as builder.cli reports a failing build
        print(f"ERROR: {exc}", file=sys.stderr)
        return False
    return True


class _Named:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name
