"""Answer a no-op rebuild without loading the builder.

docker's client answers a fully cached build in ~0.1 s because its daemon is
already running. A `pybuild` process pays ~0.3 s of imports (networkx, click,
the frontend) before it can even ask its cache. So after a successful build
whose result depends only on things that `lstat` and a few index lookups can
check, pybuild writes a memo, ROOT/memo/KEY, keyed by the exact command line,
working directory, terminal and the environment variables that can change a
build. The next identical command (builder.entry) reads the memo first and,
when every check holds, prints what the full cached build would have printed
(every step CACHED, the same warnings, the same image ID) and stops
(builder/root/replay.py).

What a memo checks, all of which must hold, else the full build runs:
- every path the build read, as the build reached it: the context directory,
  the Dockerfile, ignore and config files and every named context as given
  on the command line, each component on the way, every symlink met (lstat
  and its target) and followed as the kernel follows it (inside a context,
  as the build does: confined to the context); every context directory the
  build listed and every entry it selected. A final path or a listed
  directory is compared on type, mode, owner, size, device, inode, mtime
  and ctime (ctime changes on any write, chmod or rename and userland
  cannot set it); a plain directory on the way on its identity only (type,
  device, inode), so unrelated files next to it do not matter. One write
  escapes this: bytes stored through a writable shared mmap after the
  page's first write fault (until the kernel writes the page back) move
  neither mtime nor ctime, so the stat cache (cache/statcache.py) and this
  memo can both miss them, as BuildKit's stat-based context sync does.
- pybuild's own source files and the config file (a new pybuild or setting
  gets a full build);
- each base image tag still resolves, in this root, to the digest used, and
  each base's manifest and config are still in the store (else a full build
  would ask the registry);
- each step's cache record still exists (so `pybuild prune` is honoured:
  a pruned step runs again, as it would without the memo), and the image
  and its tags are still in the store. A build for several platforms
  (`--platform a,b`) has one target result per platform, each checked, and
  its image is the index: every platform's manifest and config must still
  be there too. The key holds the command line, so a memo of one
  `--platform` never answers another's (nor the default's) command; were
  they ever to share a tag, the tag check sends the other to its full build.

A memo is written only when those checks are exact for this build:
- every path is re-read at the end of the build and must be as it was
  when the build reached it;
- no checked entry may have changed (its ctime) within RACY_NS of the time
  the build read it (RACY_COARSE_NS on a filesystem with whole-second
  times): such an entry could be rewritten, same size, in the same
  timestamp tick, after the build read it, without anything `lstat` shows
  changing. Any later change to a settled entry moves its ctime, which the
  end of the build or the replay sees. The next run of the command, once
  the entry has settled, writes the memo.
- the local image store is the only output: no --push, --pull, --no-cache,
  --cache-to, --cache-from, --explain or --metadata-file, a local directory
  context, and no ADD of a URL or a git repository (BuildKit checks those
  every build).
Writing a memo never fails a build: any error only leaves it unwritten.

The replay itself, and what it does besides answering, is
builder/root/replay.py. $PYBUILD_NO_MEMO set to anything but empty turns
memos off: nothing is read or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

MEMO_VERSION = 3
NO_MEMO_ENV = "PYBUILD_NO_MEMO"
RACY_NS = 100_000_000
RACY_COARSE_NS = 2_000_000_000
MAX_MEMOS = 32
_MAX_SYMLINKS = 40  # as the kernel's path walk
# Variables that change what a build means or prints, besides those the
# command line names (`--build-arg NAME` takes NAME from the environment).
_ENV_PREFIXES = ("PYBUILD_", "BUILDKIT_", "DOCKER_", "XDG_", "SOURCE_DATE_EPOCH", "HOME", "NO_COLOR", "TERM",
                 "COLUMNS")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGES = ("builder", "frontend", "cache", "runtime")


def enabled() -> bool:
    return not os.environ.get(NO_MEMO_ENV)


def memo_key(argv: list[str], cwd: str, env: dict[str, str], tty: bool) -> str:
    """The command's identity. A `--secret` spec's words are left out: a
    secret's value must not reach the root, not even hashed into a memo's
    name, and it changes no build result (a replay checks it is there)."""
    from builder.solver.secrets import secret_variables

    outside, specs = _split_secrets(argv)
    named = {m for arg in outside for m in _NAME.findall(arg)}
    secret = secret_variables(specs)  # a secret read from PYBUILD_*/DOCKER_* is still a secret
    relevant = sorted((k, v) for k, v in env.items()
                      if (k in named or k.startswith(_ENV_PREFIXES)) and k not in secret)
    text = json.dumps([MEMO_VERSION, argv, cwd, tty, relevant])
    return hashlib.sha256(text.encode()).hexdigest()


def _split_secrets(argv: list[str]) -> tuple[list[str], list[str]]:
    """The command's words outside its `--secret` specs, and the specs."""
    outside: list[str] = []
    specs: list[str] = []
    value_next = False
    for arg in argv:
        if value_next:
            value_next = False
            specs.append(arg)
        elif arg == "--secret":
            value_next = True
        elif arg.startswith("--secret="):
            specs.append(arg.removeprefix("--secret="))
        else:
            outside.append(arg)
    return outside, specs


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


# -- what a path looks like -------------------------------------------------------------

def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _print(st: os.stat_result | None, path: str, full: bool) -> list | None:
    """What is compared for one path: all of lstat (and a symlink's target)
    for a path the build read, the identity for a directory passed through."""
    if st is None:
        return None
    if not full:
        return [stat.S_IFMT(st.st_mode), st.st_dev, st.st_ino]
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return [st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_uid, st.st_gid,
            link]


def _settled(fingerprint: list | None, read_ns: int) -> bool:
    """Had this entry last changed long enough before the build read it
    that any later change must move its ctime? Times are kept at the kernel
    tick (a few ms) on ext4, xfs, btrfs and tmpfs; a whole-second ctime marks
    a filesystem whose granularity may be as coarse as 2 s. mtime is not
    consulted: userland sets it at will, a change always moves ctime."""
    if fingerprint is None:
        return True
    ctime = fingerprint[5]
    window = RACY_COARSE_NS if ctime % 1_000_000_000 == 0 else RACY_NS
    return ctime < read_ns - window


class Observer:
    """What one build read; filled in by the build, written by `record`.

    Each path is noted when the build reads it, give or take a few ms
    (well within RACY_NS), or with the time it was read (`read_ns`). Its
    methods never raise into the build: anything odd refuses the memo."""

    def __init__(self, started_ns: int | None = None):
        # When the command started (builder.cli.shared.Invocation): what the
        # build read before this Observer existed (the config file) was read after it.
        self.started_ns = started_ns or time.time_ns()
        # path -> (full, fingerprint, when the build read it)
        self.paths: dict[str, tuple[bool, list | None, int]] = {}
        self.resolved: dict[tuple[str, str], str] = {}  # (tag reference, platform) -> manifest digest
        self.blobs: set[str] = set()  # each base's manifest and config: a full build reads them
        self.eligible = True
        self.refused_because: str | None = None
        # The results a cached build looks up: its target's, one per platform
        # (a memo keyed by the command line, --platform included, is never
        # answered with another platform's result).
        self.targets: list[str] = []
        self.steps: list[list[str]] = []  # [vertex, name], in the solver's order
        # The platforms of a build for several are solved on threads at once,
        # each reading the context: a path is noted by one at a time.
        self._noting = threading.Lock()

    @property
    def target_key(self) -> str | None:
        """The target's result of a build for one platform."""
        return self.targets[0] if len(self.targets) == 1 else None

    @target_key.setter
    def target_key(self, key: str) -> None:
        self.targets = [key]

    def refuse(self, why: str = "the build depends on something a memo cannot check") -> None:
        if self.eligible:
            self.eligible, self.refused_because = False, why

    def _note(self, path: str, full: bool, st: os.stat_result | None = None, *, given: bool = False,
              read_ns: int | None = None) -> None:
        with self._noting:
            known = self.paths.get(path)
            if known is not None and (known[0] or not full):
                return  # already held at least as closely; the end of the build checks it again
            try:
                if not given:
                    st = _lstat(path)
                self.paths[path] = (full, _print(st, path, full), read_ns or time.time_ns())
            except Exception as exc:  # noqa: BLE001 - a memo is only a shortcut
                self.refuse(f"cannot read {path}: {exc}")

    def saw(self, path, st: os.stat_result | None) -> None:
        """An entry the build listed, with the lstat it took."""
        self._note(os.fspath(path), True, st, given=True)

    def look(self, path) -> None:
        """lstat a path the build depends on (present or not)."""
        self._note(os.fspath(path), True)

    def look_file(self, path, read_ns: int | None = None) -> None:
        """A path the build reaches by name (the context directory, the
        Dockerfile, ignore and config files): every component on the way and
        every symlink followed, as the kernel resolves it; and its name also
        as the build reads a Dockerfile or ignore file, resolved inside the
        directory as if it were `/` (builder.context.dockerfile.open_context_file)."""
        try:
            path = os.path.join(os.getcwd(), os.fspath(path))
            self._trace("/", path, read_ns)
            directory, name = os.path.split(path)
            directory = self._trace("/", directory, read_ns)
            if directory is not None:
                self._trace(directory, name, read_ns)
        except Exception as exc:  # noqa: BLE001
            self.refuse(f"cannot follow {path}: {exc}")

    def look_build_contexts(self, values) -> None:
        """The paths of `--build-context NAME=DIR` and `NAME=oci-layout://PATH`
        as given: the build resolves them once, at its start."""
        for value in values:
            source = value.partition("=")[2]
            if source.startswith("oci-layout://"):
                layout = source.removeprefix("oci-layout://").partition("@")[0].partition(":")[0]
                self.look_file(os.path.join(layout, "index.json"))
            elif source and not source.startswith("docker-image://"):
                self.look_file(source)

    def look_along(self, root, relpath: str) -> None:
        """A path inside a context, resolved as the build resolves it there
        (runtime.fsutil.resolve_in_root: absolute targets and `..` stay
        inside): a symlink swapped on the way changes where the build reads."""
        try:
            self._trace(os.fspath(root), relpath)
        except Exception as exc:  # noqa: BLE001
            self.refuse(f"cannot follow {relpath} in {root}: {exc}")

    def _trace(self, root: str, path: str, read_ns: int | None = None) -> str | None:
        """Note each component of `path` below `root` as it is resolved
        there; returns the path it resolves to (None: it does not exist)."""
        pending = deque(path.split("/"))
        resolved: list[str] = []
        followed = 0
        while pending:
            name = pending.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(root, *resolved, name)
            st = _lstat(candidate)
            final = all(part in ("", ".") for part in pending)
            is_link = st is not None and stat.S_ISLNK(st.st_mode)
            # A directory is held by identity: the build lists one, if ever,
            # through `look`, which holds its times.
            self._note(candidate, is_link or (final and not (st is not None and stat.S_ISDIR(st.st_mode))), st,
                       given=True, read_ns=read_ns)
            if st is None:
                return None  # what follows does not exist either: its appearing changes this entry
            if not is_link:
                resolved.append(name)
                continue
            followed += 1
            if followed > _MAX_SYMLINKS:
                self.refuse(f"too many levels of symbolic links in {path}")
                return None
            seen = self.paths.get(candidate, (False, None, 0))[1]
            target = seen[-1] if seen is not None and len(seen) > 3 else None
            if target is None:  # not the symlink it was earlier in this build
                self.refuse(f"{candidate} changed during the build")
                return None
            if target.startswith("/"):
                resolved = []
            pending.extendleft(reversed(target.split("/")))
        return os.path.join(root, *resolved)

    def used_image(self, ref, platform: str, manifest, config) -> None:
        """A base image the build read from the store (a tag resolved in the
        index, or a pinned digest)."""
        if ref.digest is None:
            self.resolved[(str(ref), platform)] = str(manifest)
        self.blobs.update((str(manifest), str(config)))

    def unchanged_since(self) -> str | None:
        """Why the paths cannot vouch for this build, or None: each must be
        as the build found it, and settled."""
        for path, (full, fingerprint, read_ns) in self.paths.items():
            if _print(_lstat(path), path, full) != fingerprint:
                return f"{path} changed during the build"
            if full and not _settled(fingerprint, read_ns):
                return f"{path} changed just before the build read it"
        return None

    def entries(self) -> list[list]:
        return [[path, full, fingerprint] for path, (full, fingerprint, _) in sorted(self.paths.items())]


@dataclass(frozen=True)
class Answer:
    """What a replay gives back for the command besides what the Observer
    saw: the full build's image, names and warnings, how it was asked to
    print them, and the settings a replay checks again (the config file
    read, the --secret and --ssh sources)."""

    image_id: str
    manifest: str
    tags: tuple[str, ...]
    warnings: list[str]
    progress: str
    quiet: bool
    iidfile: str | None
    config_path: str | None
    secrets: tuple[str, ...] = ()
    ssh: tuple[str, ...] = ()


def record(root: Path, argv: list[str], observer: Observer, answer: Answer, *, debug: bool = False) -> None:
    """Write the memo atomically. Never raises: a build that succeeded stays
    successful, and a memo not written only costs the next run its shortcut."""
    try:
        why = _record(root, argv, observer, answer)
    except Exception as exc:  # noqa: BLE001
        why = f"{type(exc).__name__}: {exc}"
    if why is not None and debug:
        try:
            print(f"DEBUG: no-op memo not written: {why}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - not even a closed stderr fails the build
            pass


def _record(root: Path, argv: list[str], observer: Observer, answer: Answer) -> str | None:
    if not observer.eligible:
        return observer.refused_because
    if not observer.targets:
        return "the build named no target result"
    why = observer.unchanged_since()
    if why is not None:
        return why
    body = {
        "version": MEMO_VERSION, "code": code_fingerprint(), "root": str(root), "config": answer.config_path,
        "progress": answer.progress, "quiet": answer.quiet, "iidfile": answer.iidfile,
        "secrets": list(answer.secrets), "ssh": list(answer.ssh), "image_id": answer.image_id,
        "manifest": answer.manifest, "tags": list(answer.tags), "targets": observer.targets,
        "resolved": [[ref, platform, digest] for (ref, platform), digest in sorted(observer.resolved.items())],
        "blobs": sorted(observer.blobs), "paths": observer.entries(), "steps": observer.steps,
        "warnings": list(answer.warnings),
    }
    key = memo_key(argv, os.getcwd(), dict(os.environ), sys.stderr.isatty())
    directory = root / "memo"
    directory.mkdir(exist_ok=True)
    _keep_newest(directory, MAX_MEMOS - 1)
    tmp = directory / f".{key}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(body, separators=(",", ":")))
        os.replace(tmp, directory / key)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return None


def _keep_newest(directory: Path, count: int) -> None:
    """A command line that changes every time (--build-arg SHA=...) must not
    grow the root: only the most recent memos are kept."""
    def age(entry):
        try:
            return entry.stat(follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            return 0

    with os.scandir(directory) as it:
        memos = sorted(it, key=age, reverse=True)
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


def unchanged(entries: list[list]) -> bool:
    """Whether every path of a memo (Observer.entries) is still as recorded."""
    for path, full, fingerprint in entries:
        if _print(_lstat(path), path, full) != fingerprint:
            return False
    return True


def announce(reporter, tags, image_id: str, duration: float) -> None:
    """The last lines of a build, replayed or not."""
    for tag in tags:
        reporter.message(f"naming to {tag} done")
    reporter.message(f"writing image {image_id} done ({duration:.1f}s)")


class RecordingReporter:
    """A builder.solver.progress.BuildReporter that passes every call to the
    real one and keeps the warnings, which a cached build prints again."""

    def __init__(self, inner):
        self._inner = inner
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        self._inner.warning(text)

    def message(self, text: str) -> None:
        self._inner.message(text)

    def task(self, name: str):
        return self._inner.task(name)

    def set_names(self, names) -> None:
        self._inner.set_names(names)

    def name_of(self, vertex: str) -> str:
        return self._inner.name_of(vertex)

    def step_number(self, vertex: str) -> int | None:
        return self._inner.step_number(vertex)

    def planned(self, vertex: str, cached: bool) -> None:
        self._inner.planned(vertex, cached)

    def started(self, vertex: str) -> None:
        self._inner.started(vertex)

    def output(self, vertex: str, data: bytes) -> None:
        self._inner.output(vertex, data)

    def finished(self, vertex: str, error: BaseException | None, duration: float) -> None:
        self._inner.finished(vertex, error, duration)

    def progress_hook(self, vertex: str):
        return self._inner.progress_hook(vertex)

    def close(self) -> None:
        self._inner.close()
