"""Answer a no-op rebuild without loading the builder.

docker's client answers a fully cached build in ~0.1 s because its daemon is
already running. A `pybuild` process pays ~0.3 s of imports (networkx, click,
the frontend) before it can even ask its cache. So after a successful build
whose result depends only on things that `stat` and a few index lookups can
check, pybuild writes a memo, ROOT/memo/KEY, keyed by the exact command line,
working directory, terminal and the environment variables that can change a
build. The next identical command (builder.entry) reads the memo first and,
when every check holds, prints what the full cached build would have printed
(every step CACHED, the same warnings, the same image ID) and stops.

What a memo checks, all of which must hold, else the full build runs:
- every path the build read, as the build saw it: the Dockerfile and ignore
  files, every context directory it listed and every entry it selected, and
  the path components on the way (lstat: type, mode, owner, size, inode,
  mtime, ctime; ctime changes on any write, chmod or rename, and userland
  cannot set it). An entry whose times were within RACY_NS of the build's
  start could change again without changing its times, so for those the memo
  holds a content digest (files) or the sorted names (directories) instead.
- pybuild's own source files and the config file (a new pybuild or setting
  gets a full build);
- each base image tag still resolves, in this root, to the digest used;
- each step's cache record still exists (so `pybuild prune` is honoured:
  a pruned step runs again, as it would without the memo), and the image
  and its tags are still in the store.

Only builds with nothing outside those checks are memoised: the local image
store as the only output, no --push, --pull, --no-cache, --cache-to,
--cache-from, --explain or --metadata-file, a local directory context, and
no ADD of a URL or a git repository (BuildKit checks those every build).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import time
from pathlib import Path

MEMO_VERSION = 1
# The command line as the console script received it (builder.entry sets
# it); None when the CLI runs some other way, and then nothing is memoised.
ARGV: list[str] | None = None
RACY_NS = 100_000_000
RACY_COARSE_NS = 2_000_000_000
MAX_MEMOS = 32
# Variables that change what a build means or prints, besides those the
# command line names (`--build-arg NAME` takes NAME from the environment).
_ENV_PREFIXES = ("PYBUILD_", "BUILDKIT_", "DOCKER_", "XDG_", "SOURCE_DATE_EPOCH", "HOME", "NO_COLOR", "TERM",
                 "COLUMNS")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGES = ("builder", "frontend", "cache", "runtime")


def memo_key(argv: list[str], cwd: str, env: dict[str, str], tty: bool) -> str:
    named = {m for arg in argv for m in _NAME.findall(arg)}
    relevant = sorted((k, v) for k, v in env.items() if k in named or k.startswith(_ENV_PREFIXES))
    text = json.dumps([MEMO_VERSION, argv, cwd, tty, relevant])
    return hashlib.sha256(text.encode()).hexdigest()


def code_fingerprint() -> str:
    """pybuild's own sources as stat sees them: an upgrade or an edit in a
    development checkout must not replay a result the old code made."""
    top = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in _PACKAGES:
        for directory, dirs, files in os.walk(top / package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(directory, name))
                    h.update(f"{directory}/{name} {st.st_size} {st.st_mtime_ns} {st.st_ino}\n".encode())
    return h.hexdigest()


def _stamp(st: os.stat_result | None) -> list | None:
    if st is None:
        return None
    return [st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_uid, st.st_gid]


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _racy(st: os.stat_result, started_ns: int) -> bool:
    """Could this entry change again, before the build's end, without its
    times changing? Times are kept at the kernel tick (a few ms) on ext4,
    xfs, btrfs and tmpfs; a whole-second time marks a filesystem whose
    granularity may be as coarse as 2 s."""
    latest = max(st.st_mtime_ns, st.st_ctime_ns)
    coarse = st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0
    return latest >= started_ns - (RACY_COARSE_NS if coarse else RACY_NS)


def _content(path: str, st: os.stat_result) -> str:
    """What stands in for times that are too recent to trust."""
    if stat.S_ISDIR(st.st_mode):
        return hashlib.sha256("\0".join(sorted(os.listdir(path))).encode()).hexdigest()
    if stat.S_ISREG(st.st_mode):
        from cache.statcache import hash_file

        return str(hash_file(path)[0])
    return os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""


class Observer:
    """What one build read; filled in by the build, written by `record`."""

    def __init__(self):
        self.started_ns = time.time_ns()
        self.paths: dict[str, os.stat_result | None] = {}
        self.resolved: dict[tuple[str, str], str] = {}  # (tag reference, platform) -> manifest digest
        self.eligible = True
        self.target_key: str | None = None  # the one result a cached build looks up
        self.steps: list[list[str]] = []  # [vertex, name], in the solver's order

    def saw(self, path, st: os.stat_result | None) -> None:
        self.paths[os.fspath(path)] = st

    def look(self, path) -> None:
        """lstat a path the build depends on (present or not)."""
        path = os.fspath(path)
        self.paths[path] = _lstat(path)

    def look_file(self, path) -> None:
        """A file read by following symlinks (the Dockerfile, ignore files)."""
        self.look(path)
        if os.path.islink(path):
            self.look(os.path.realpath(path))

    def look_along(self, root, relpath: str) -> None:
        """Each component of a path below `root`: a symlink swapped on the way
        changes where the build reads, and that component's lstat."""
        current = os.fspath(root)
        for part in relpath.split("/"):
            if part in ("", "."):
                continue
            current = os.path.join(current, part)
            if current not in self.paths:
                self.look(current)

    def refuse(self) -> None:
        """This build depends on something a memo cannot check."""
        self.eligible = False

    def entries(self) -> list[list]:
        out = []
        for path in sorted(self.paths):
            st = self.paths[path]
            check = None
            if st is not None and _racy(st, self.started_ns):
                check = _content(path, st)
            out.append([path, _stamp(st), check])
        return out


def record(root: Path, key: str, observer: Observer, *, progress: str, quiet: bool, iidfile: str | None,
           image_id: str, manifest: str, tags: tuple[str, ...], warnings: list[str],
           config_path: str | None) -> None:
    """Write the memo atomically; a failure to write only costs the next run its shortcut."""
    if not observer.eligible or observer.target_key is None:
        return
    body = {
        "version": MEMO_VERSION, "code": code_fingerprint(), "root": str(root), "config": config_path,
        "progress": progress, "quiet": quiet, "iidfile": os.path.abspath(iidfile) if iidfile else None,
        "image_id": image_id, "manifest": manifest, "tags": list(tags), "target": observer.target_key,
        "resolved": [[ref, platform, digest] for (ref, platform), digest in sorted(observer.resolved.items())],
        "paths": observer.entries(), "steps": observer.steps, "warnings": warnings,
    }
    directory = root / "memo"
    try:
        directory.mkdir(exist_ok=True)
        _keep_newest(directory, MAX_MEMOS - 1)
        tmp = directory / f".{key}.{os.getpid()}"
        tmp.write_text(json.dumps(body, separators=(",", ":")))
        os.replace(tmp, directory / key)
    except OSError:
        pass


def _keep_newest(directory: Path, count: int) -> None:
    """A command line that changes every time (--build-arg SHA=...) must not
    grow the root: only the most recent memos are kept."""
    with os.scandir(directory) as it:
        memos = sorted(it, key=lambda e: e.stat().st_mtime_ns, reverse=True)
    for entry in memos[count:]:
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass


def forget(root: Path) -> None:
    """Drop every memo of a root (prune calls this: cheaper than reasoning
    about which ones it touched; rmi needs nothing, a replay checks tags)."""
    directory = Path(root) / "memo"
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass


# -- the fast path ---------------------------------------------------------------------

def _root_and_config(argv: list[str]) -> tuple[Path, str | None]:
    """The root and config file exactly as builder.cli resolves them; only
    the long forms are read here (anything else falls back to the full CLI,
    whose memo then lives where it belongs and is simply not found)."""
    from builder.config import load_settings
    from builder.worker import default_root

    flags = {}
    for i, arg in enumerate(argv):
        for name in ("--root", "--config"):
            if arg == name and i + 1 < len(argv):
                flags[name] = argv[i + 1]
            elif arg.startswith(name + "="):
                flags[name] = arg.split("=", 1)[1]
    settings = load_settings(flags.get("--config"), os.environ, root=flags.get("--root"))
    config_path = settings.config.path
    return settings.root or default_root(), str(config_path) if config_path else None


def _unchanged(entries: list[list]) -> bool:
    for path, stamp, check in entries:
        st = _lstat(path)
        if _stamp(st) != stamp:
            return False
        if check is not None and _content(path, st) != check:
            return False
    return True


def _store_agrees(root: Path, body: dict) -> bool:
    from cache.digest import Digest
    from cache.index import Index
    from cache.store import ContentStore

    store = ContentStore(root / "content")
    if not (store.has(Digest.parse(body["manifest"])) and store.has(Digest.parse(body["image_id"]))):
        return False
    index = Index(root / "index.db")
    try:
        for ref, platform, digest in body["resolved"]:
            if str(index.get_resolved(ref, platform)) != digest:
                return False
        for tag in body["tags"]:
            if str(index.get_image(tag)) != body["manifest"]:
                return False
        # As the solver does for a cached build: one lookup, of the target's
        # key, whose snapshots must all be there (Snapshotter.exists, without
        # importing the runtime: ~13 ms); and it counts as a use.
        cached = index.get_result(body["target"])
        if cached is None or not all((root / "snapshots" / s / "fs").is_dir() for s in cached.chain):
            return False
        index.touch_results([body["target"]])
    finally:
        index.close()
    return True


def announce(reporter, tags, image_id: str, duration: float) -> None:
    """The last lines of a build, replayed or not."""
    for tag in tags:
        reporter.message(f"naming to {tag} done")
    reporter.message(f"writing image {image_id} done ({duration:.1f}s)")


def replay(argv: list[str]) -> bool:
    """Finish an identical, unchanged build from its memo; False: run the build."""
    started = time.monotonic()
    try:
        root, config_path = _root_and_config(argv)
        key = memo_key(argv, os.getcwd(), dict(os.environ), sys.stderr.isatty())
        try:
            body = json.loads((root / "memo" / key).read_text())
        except FileNotFoundError:
            return False
        if (body.get("version") != MEMO_VERSION or body["root"] != str(root) or body["config"] != config_path
                or body["code"] != code_fingerprint() or not _unchanged(body["paths"])
                or not _store_agrees(root, body)):
            return False
    except Exception:  # a memo is only a shortcut: anything odd means "build"
        return False
    from builder.progress import make_reporter

    reporter = make_reporter("quiet" if body["quiet"] else body["progress"])
    try:
        reporter.set_names({vertex: _Named(name) for vertex, name in body["steps"]})
        for text in body["warnings"]:
            reporter.warning(text)
        for vertex, _ in body["steps"]:
            reporter.planned(vertex, True)
        if body["iidfile"]:
            Path(body["iidfile"]).write_text(body["image_id"])
        if not body["quiet"]:
            announce(reporter, body["tags"], body["image_id"], time.monotonic() - started)
    finally:
        reporter.close()
    if body["quiet"]:
        print(body["image_id"])
    return True


class _Named:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class RecordingReporter:
    """Passes every call to the real reporter and keeps the warnings, which
    a cached build prints again."""

    def __init__(self, inner):
        self._inner = inner
        self.warnings: list[str] = []

    def warning(self, text):
        self.warnings.append(text)
        return self._inner.warning(text)

    def __getattr__(self, name):
        return getattr(self._inner, name)
