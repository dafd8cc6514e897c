"""pybuild as an ordinary user (issue 16), next to the root build.

The rootless builders run this tree's `pybuild` command the way
tests/fixtures/rootless.py does: `runuser -u USER -- env -i ...` with
Debian's interpreter from the venv scripts/rootless-setup.sh makes
(/opt/pybuild-rootless: pybuild's dependencies, readable by anyone) and a
world-readable copy of frontend/ builder/ cache/ runtime/ first on
PYTHONPATH (the checkout may sit where the user cannot read it).

That interpreter is not the one `pybuild` (the root builder of
bench/builders.py) runs: root's is pyenv's CPython 3.11.7 (configured
--enable-shared without --enable-optimizations) with an editable install's
finder on its path; the venv's is Debian's 3.11.2 (libpython linked into
the executable, Debian's optimised build): 0.13 s against 0.25 s for the
same pure-Python loop here. So `pybuild-venv`
runs the same interpreter and copy as root, and only the user differs
between it and `pybuild-rootless`: that pair is the comparison the issue's
"within 1.2x of a root build" asks for.

Bytecode as pybuild_env() arranges it for root: PYTHONDONTWRITEBYTECODE
unset and a pycache prefix outside the tree, here one the user owns,
filled by compileall once at start (unmeasured), as a pip-installed
pybuild ships its .pyc files.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from bench import measure
from bench.env import CACHE_DIR, remove_tree, retire

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("frontend", "builder", "cache", "runtime")
# The user scripts/rootless-setup.sh makes for the tests, unless
# PYBUILD_BENCH_USER names another: the tests' leak check kills every
# process of their user, and this harness's check every process of its, so
# a bench run beside the rootless tests needs a user (and a subordinate
# range) of its own.
USER = os.environ.get("PYBUILD_BENCH_USER") or os.environ.get("PYBUILD_ROOTLESS_USER", "pybuild-rootless")
VENV = Path(os.environ.get("PYBUILD_ROOTLESS_VENV", "/opt/pybuild-rootless"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP = "run scripts/rootless-setup.sh as root"
SETTLE_S = 5.0  # how long a user's process may take to go after its command returned


def subordinate_range(name: str, uid: int, path: str = "/etc/subuid") -> tuple[int, int] | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (name, str(uid)) and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]), int(parts[2])
    return None


def _readable(path: Path) -> None:
    for directory, _, files in os.walk(path):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o755 if name == "pybuild" else 0o644)


class Code:
    """This tree's packages where any user can read them, a `pybuild`
    script running them with the venv's interpreter, and the user's pycache
    prefix. One per harness run, shared by every builder here."""

    _made: "Code | None" = None

    def __init__(self, user: str):
        self.python = VENV / "bin" / "python"
        if not os.access(self.python, os.X_OK):
            raise RuntimeError(f"no interpreter at {self.python} ({SETUP})")
        # Under CACHE_DIR, not the run's work dir: the same paths every run,
        # so the .pyc files in the prefix stay valid from one run to the next
        # (copy2 keeps the sources' mtimes, which the .pyc files record).
        self.source = CACHE_DIR / "rootless-src"
        shutil.rmtree(self.source, ignore_errors=True)
        self.source.mkdir(parents=True)
        for package in PACKAGES:
            shutil.copytree(REPO / package, self.source / package, ignore=shutil.ignore_patterns("__pycache__"))
        self.script = self.source / "pybuild"
        self.script.write_text(f"#!{self.python}\nimport sys\nfrom builder.entry import main\nsys.exit(main())\n")
        _readable(self.source)
        self.pycache = CACHE_DIR / f"pycache-{user}"
        self.pycache.mkdir(exist_ok=True)
        account = pwd.getpwnam(user)
        os.chown(self.pycache, account.pw_uid, account.pw_gid)
        site = next((VENV / "lib").glob("python3*/site-packages"))
        measure.quiet(["runuser", "-u", user, "--", "env", "-i", f"PATH={PATH}",
                       f"PYTHONPYCACHEPREFIX={self.pycache}", str(self.python), "-m", "compileall", "-q",
                       "-x", "/(pip|setuptools|pkg_resources|_distutils_hack)/",
                       *(str(self.source / p) for p in PACKAGES), str(site)], timeout=900)

    @classmethod
    def get(cls) -> "Code":
        if cls._made is None:
            cls._made = cls(USER)
        return cls._made

    def env(self, home: Path, user: str) -> dict[str, str]:
        """The whole environment of a command (`env -i`): nothing of root's
        (PYBUILD_*, DOCKER_CONFIG, XDG_*) leaks in."""
        return {"HOME": str(home), "USER": user, "LOGNAME": user, "PATH": PATH, "LANG": "C.UTF-8",
                "PYTHONPATH": str(self.source), "PYTHONPYCACHEPREFIX": str(self.pycache)}


def processes_of(uids) -> dict[int, str]:
    """pid -> name of every process whose real or effective uid is in `uids`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if any(int(uid) in uids for uid in fields.get("Uid", "").split()[:2]):
            found[int(entry)] = fields.get("Name", "?").strip()
    return found


class PybuildAs:
    """`pybuild build/tag/push` of this tree, run by the venv's interpreter
    with `env -i`, as root (this class) or as the rootless user (below).
    Root and work dirs are the builder's own; a cold state is a new root."""

    name = "pybuild-venv"
    user: str | None = None
    snapshotter: str | None = None  # PYBUILD_SNAPSHOTTER, when set

    def __init__(self, work: Path, log: Path):
        self.work, self.log = work, log
        self.root: Path | None = None
        self.retired: list[Path] = []
        self._n = 0
        self.home = work / f"{self.name}-home"
        self.code: Code | None = None
        self.ids: tuple[int, int] = (0, 0)
        self.owned: range = range(0)  # host uids of the user and its namespace

    def start(self) -> None:
        if self.user is not None:
            account = pwd.getpwnam(self.user)  # KeyError: no such user
            subids = subordinate_range(self.user, account.pw_uid)
            if subids is None:
                raise RuntimeError(f"{self.user} has no subordinate ids ({SETUP})")
            self.ids = (account.pw_uid, account.pw_gid)
            self.owned = range(subids[0], subids[0] + subids[1])
            # The contexts and roots live under the work dir (mkdtemp: 0700).
            self.work.chmod(0o755)
            left = processes_of({self.ids[0], *self.owned})
            if left:
                raise RuntimeError(f"processes of {self.user} running before the run: {left}")
        self.code = Code.get()
        self._mkdir(self.home)

    def _mkdir(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, *self.ids)
        return path

    def stop(self) -> None:
        # As root: the snapshots hold files of the user's subordinate ids.
        for root in [*self.retired, self.root]:
            if root is not None:
                remove_tree(root)
        self.retired, self.root = [], None

    def command(self, *args: str) -> list[str]:
        variables = self.code.env(self.home, self.user or "root")
        if self.snapshotter:
            variables["PYBUILD_SNAPSHOTTER"] = self.snapshotter
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return [*prefix, "env", "-i", *(f"{k}={v}" for k, v in variables.items()), str(self.code.script), *args]

    def version(self) -> str:
        """The version, and what `pybuild info` says of the snapshotter and
        of rootless, on a scratch root."""
        scratch = self._mkdir(self.work / f"{self.name}-info-root")
        try:
            done = subprocess.run(self.command("info", "--root", str(scratch)), capture_output=True, text=True,
                                  cwd="/", timeout=120)
        finally:
            remove_tree(scratch)
        if done.returncode != 0:
            raise RuntimeError(f"pybuild info as {self.user or 'root'} failed: {done.stderr.strip()[-2000:]}")
        keep = ("version", "snapshotter", "snapshotter reason", "rootless")
        lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        python = subprocess.run([str(self.code.python), "-c", "import platform; print(platform.python_version())"],
                                capture_output=True, text=True).stdout.strip()
        return "; ".join(f"{k}: {lines[k].strip()}" for k in keep if k in lines) + f"; CPython {python} ({VENV})"

    def cold(self) -> None:
        retire(self.retired, self.root)  # kept until the run ends: env.retire says why
        self._n += 1
        self.root = self._mkdir(self.work / f"{self.name}-root-{self._n}")

    def _run(self, *args: str) -> measure.Sample:
        sample = measure.run(self.command(*args), log=self.log, cwd=self.home)
        left = self._left_running()
        if left:
            sample.ok = False
            sample.note = f"{sample.note}; processes left running: {left}".lstrip("; ")
        return sample

    def _left_running(self) -> dict[int, str]:
        """A process of the user or its namespace outliving the command (a
        fuse-overlayfs or a step's) is a leak: killed, and the sample fails."""
        if self.user is None:
            return {}
        uids = {self.ids[0], *self.owned}
        deadline = time.monotonic() + SETTLE_S
        while (left := processes_of(uids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return left

    def build(self, context: Path, tag: str, args: dict[str, str]) -> measure.Sample:
        build_args = [x for key, value in args.items() for x in ("--build-arg", f"{key}={value}")]
        return self._run("build", "--root", str(self.root), "--progress", "plain", "-t", tag, *build_args,
                         str(context))

    def tag(self, source: str, target: str) -> None:
        measure.quiet(self.command("tag", "--root", str(self.root), source, target), log=self.log)

    def push(self, ref: str) -> measure.Sample:
        return self._run("push", "--root", str(self.root), ref)


class PybuildRootless(PybuildAs):
    """As the user: its own user namespace, kernel overlayfs with userxattr
    (the probe's choice on this kernel; `pybuild info` says so)."""

    name = "pybuild-rootless"
    user = USER


class PybuildRootlessFuse(PybuildRootless):
    """As the user, with fuse-overlayfs forced."""

    name = "pybuild-rootless-fuse"
    snapshotter = "fuse-overlayfs"


# Issue 16's performance targets for rootless on kernel overlayfs: the big
# context's cold build within 1.2x of a root build, its no-op and one-file
# change no slower than docker.
TARGETS = {("2", "cold"): ("root", 1.2), ("2", "no-op"): ("docker", 1.0),
           ("2", "one file changed"): ("docker", 1.0)}

BUILDERS = {b.name: b for b in (PybuildAs, PybuildRootless, PybuildRootlessFuse)}
CONTEXT_OWNER = USER  # who owns the generated contexts when a rootless builder runs


def context_owner(names) -> tuple[int, int] | None:
    """(uid, gid) the contexts are given to: the user's, when a rootless
    builder is among `names` (a user builds a context of its own); root
    builders and docker's client read them as root either way."""
    if not any(getattr(BUILDERS.get(n), "user", None) for n in names):
        return None
    account = pwd.getpwnam(CONTEXT_OWNER)
    return account.pw_uid, account.pw_gid
