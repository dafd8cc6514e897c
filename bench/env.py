"""The world the builders run in: a loopback registry holding the base
images, and (for docker) a private dockerd.

The registry and the busybox image reuse the test fixtures (tests/fixtures),
as scripts/example_registry.py does. The Debian base is a debootstrapped
minbase bookworm, cached under /var/tmp/pybuild-bench, tarred as one layer
into an OCI layout and copied to the registry with skopeo.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import quiet

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fixtures import busybox  # noqa: E402
from fixtures.registry import Registry, remove_registry, start_registry  # noqa: E402

CACHE_DIR = Path(os.environ.get("PYBUILD_BENCH_CACHE", "/var/tmp/pybuild-bench"))
APT_DIR = Path("/etc/apt")

__all__ = ["Registry", "start_registry", "remove_registry", "push_busybox", "push_debian",
           "DockerDaemon", "unmount_below", "remove_tree", "retire", "CACHE_DIR"]


def push_busybox(registry: Registry, work: Path) -> str:
    layout = work / "busybox-layout"
    busybox.build_busybox_layout(layout)
    ref = f"{registry.host}/busybox:latest"
    busybox.skopeo_push(layout, "latest", ref)
    return ref


def _one_line_sources(text: str):
    """(URI, suites) of each `deb` line of a sources.list-format file."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [ option=value ... ]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0], words[1:2]


def _deb822_sources(text: str):
    """(URI, suites) of each enabled `deb` stanza of a .sources file."""
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split()


def debian_mirror(suite: str = "bookworm", apt_dir: Path = APT_DIR) -> str:
    """The archive this machine's apt fetches `suite` from, in the order apt
    reads its sources: debootstrap fetches from where the machine is set up
    to, and no mirror is written down in this project."""
    found = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        entries = _deb822_sources(text) if path.suffix == ".sources" else _one_line_sources(text)
        found += [uri for uri, suites in entries if suite in suites]
    if not found:
        raise RuntimeError(f"no apt source in {apt_dir} serves Debian {suite}: debootstrap needs one")
    return found[0]


def _debian_rootfs(log: Path) -> Path:
    rootfs = CACHE_DIR / "bookworm-rootfs"
    if rootfs.is_dir():
        return rootfs
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = CACHE_DIR / "rootfs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    quiet(["debootstrap", "--variant=minbase", "bookworm", str(partial), debian_mirror()], log=log, timeout=1800)
    partial.rename(rootfs)
    return rootfs


def _debian_layout(log: Path) -> Path:
    """An OCI layout of the bookworm rootfs as one gzip layer (cached)."""
    layout = CACHE_DIR / "bookworm-layout"
    if (layout / "index.json").is_file():
        return layout
    rootfs = _debian_rootfs(log)
    partial = CACHE_DIR / "bookworm-layout.partial"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "blobs/sha256").mkdir(parents=True)
    tar = subprocess.run(["tar", "--numeric-owner", "--sort=name", "--mtime=@0", "--xattrs",
                          "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./dev/*",
                          "-C", str(rootfs), "-cf", "-", "."], check=True, capture_output=True).stdout
    # debootstrap leaves device nodes in /dev; images carry an empty /dev.
    image = busybox.write_image(partial, [tar], arch=busybox.host_arch(), cmd=("bash",))
    busybox.write_index(partial, busybox.OCI_MANIFEST, image.manifest, image.manifest_size, "bookworm")
    partial.rename(layout)
    return layout


def push_debian(registry: Registry, log: Path) -> str:
    layout = _debian_layout(log)
    ref = f"{registry.host}/debian:bookworm"
    busybox.skopeo_push(layout, "bookworm", ref)
    return ref


def unmount_below(path: Path) -> None:
    """Unmount whatever is still mounted under `path` (deepest first); only
    ever called on directories this harness created."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def remove_tree(path: Path) -> None:
    if path.exists():
        unmount_below(path)
        shutil.rmtree(path, ignore_errors=True)


def retire(retired: list, path) -> None:
    """Keep a cold state's predecessor until the run ends instead of
    deleting it now. This VM's ext4 has no journal, and without one the
    inode allocator passes over every inode freed in the last 60 s (300 s
    while its inode table block is dirty: ext4's recently_deleted()),
    checking each one's dtime: a build creating 20,000 files right after
    20,000 were deleted spent 11-16 s in the kernel instead of 2 s
    (perf: find_inode_bit, recently_deleted, find_get_block_common), and
    whichever builder came next after a deletion paid for it."""
    if path is not None:
        retired.append(path)


class DockerDaemon:
    """A dockerd of our own (data root, exec root and socket in `work`), or
    the one DOCKER_HOST already points at."""

    CLIENT = "/usr/bin/docker"  # Debian's 20.10 client: builds with BuildKit without buildx

    def __init__(self, work: Path, log: Path):
        self.base = work  # every data root this harness's daemons had
        self.work = work
        self._n = 0
        self.log = log
        self.process: subprocess.Popen | None = None
        self.host = os.environ.get("DOCKER_HOST", "")
        self.pid: int | None = None

    def env(self) -> dict:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def _answers(self) -> bool:
        if not self.host:
            return False
        done = subprocess.run([self.CLIENT, "info", "--format", "{{.ServerVersion}}"], env=self.env(),
                              capture_output=True, timeout=30)
        return done.returncode == 0

    def start(self) -> None:
        if self._answers():
            self.pid = self._pid_of_existing()
            return
        self.work.mkdir(parents=True, exist_ok=True)
        sock = self.work / "docker.sock"
        self.host = f"unix://{sock}"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["dockerd", "--iptables=false", "--bridge=none", "--data-root", str(self.work / "data"),
                 "--exec-root", str(self.work / "exec"), "--pidfile", str(self.work / "docker.pid"),
                 "-H", self.host], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.process.returncode}); see {self.log}")
            if self._answers():
                self.pid = self.process.pid
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within 60 s; see {self.log}")

    def _pid_of_existing(self) -> int | None:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if Path(f"/proc/{entry}/comm").read_text().strip() == "dockerd":
                        return int(entry)
                except OSError:
                    continue
        return None

    def version(self) -> str:
        done = subprocess.run([self.CLIENT, "version", "--format", "{{.Server.Version}}"], env=self.env(),
                              capture_output=True, text=True)
        return done.stdout.strip()

    def docker(self, *args: str, check: bool = True, log: Path | None = None):
        return quiet([self.CLIENT, *args], env=self.env(), check=check, log=log)

    def reset(self, log: Path) -> None:
        """Cold state: no images, no build cache (cache mounts included)."""
        self.docker("system", "prune", "-af", log=log)
        self.docker("builder", "prune", "-af", log=log)
        left = self.docker("images", "-q").stdout.split()
        if left:
            self.docker("rmi", "-f", *[x.decode() for x in left], log=log)

    def restart(self) -> bool:
        """A new daemon of ours on a new, empty data root; the old root
        stays until stop() (retire() says why). False if the
        daemon is DOCKER_HOST's, not ours."""
        if self.process is None:
            return False
        self._end()
        self._n += 1
        self.work = self.base / f"cold-{self._n}"
        self.start()
        return True

    def _end(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        self.pid = None
        # dockerd removes its socket on the way out; until the next start
        # nothing may talk to the old one.
        self.host = ""

    def stop(self) -> None:
        if self.process is None:
            return
        self._end()
        remove_tree(self.base)

