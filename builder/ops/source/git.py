"""Fetching one ref of a git repository, for git contexts, and `ADD <git url>` (`GitImpl`).

As BuildKit's git source: a shallow fetch of exactly one ref (a branch, a
tag or a commit), submodules included, `.git` left out unless asked for.

The URL and the ref come from a Dockerfile or a command line, and the
repository's `.gitmodules` from its author, so every git command runs with
the file and ext transports refused (`-c` on the command line outranks any
config file, and git hands it on to the commands it starts for submodules):
a submodule cannot copy a local repository of the host into the image, nor
run a command through `ext::`. A URL or ref starting with `-` is refused,
and both are passed after `--`, so git never reads them as options
(`#--upload-pack=...`).

Git runs with an environment of its own, so that a repository a Dockerfile
names gets none of the host user's git credentials (BuildKit's git source
has none to give: it runs in the daemon): HOME is an empty private
directory (libcurl reads `~/.netrc` there, git `~/.gitconfig`; made by
mkdtemp, 0700, so no other user can have planted one), no system
or global config is read, `credential.helper` is emptied on the command
line, nothing is prompted for, and of the host's GIT_* variables only the
ssh and TLS transport ones pass (GIT_ALLOW_PROTOCOL would overrule the
refused transports, GIT_CONFIG_* add config). The rest of the host's
environment passes: proxies (http_proxy, https_proxy, no_proxy...),
SSH_AUTH_SOCK and GIT_SSH_COMMAND, so ssh URLs work as before (ssh finds
`~/.ssh` from the password database, not $HOME).

Git must not outlive pybuild, however pybuild dies: a `git fetch` and what
it starts (git-remote-http, ssh, index-pack) run under the supervisor
(runtime.lifeline), which kills them all when pybuild dies, and the HOME
is step scratch on /dev/shm named with the process's lease token, which
the next command takes back after a SIGKILL
(runtime.executor.remove_stale_scratch). Git's automatic maintenance is
off: the repository is thrown away, and a detached `git gc` would leave
the process group.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from builder.errors import PybuildError
from builder.solver.keys import CacheKey, cache_key
from frontend.ops import GitSource, Op
from runtime import lifeline
from runtime.fsutil import remove_tree

if TYPE_CHECKING:
    from builder.solver.session import BuildSession

_TIMEOUT = 600  # seconds for one git command
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CONFINED = ("-c", "protocol.file.allow=never", "-c", "protocol.ext.allow=never", "-c", "credential.helper=",
             "-c", "maintenance.auto=false", "-c", "gc.auto=0")
# Transport settings, no credentials: the ssh command and agent, a CA bundle.
_HOST_GIT_VARIABLES = frozenset({"GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO",
                                 "GIT_SSL_CAPATH", "GIT_SSL_NO_VERIFY"})


# A URL's password in any message (git's own stderr names the URL too).
_PASSWORD_IN_URL = re.compile(r"(://[^/:@\s]*):[^/@\s]*@")


def without_passwords(text: str) -> str:
    """`text` with every URL's password masked, as BuildKit masks it (user:xxxxx@)."""
    return _PASSWORD_IN_URL.sub(r"\1:xxxxx@", text)


class GitError(PybuildError):
    """A git source or context that cannot be fetched; its message never
    holds a URL's password."""

    def __init__(self, message: str):
        super().__init__(without_passwords(message))


def _environment(home: str) -> dict[str, str]:
    # NETRC and XDG_CONFIG_HOME name credential files of the host's user
    # elsewhere than HOME (a netrc, git's XDG config and credential store).
    env = {name: value for name, value in os.environ.items()
           if name not in ("NETRC", "XDG_CONFIG_HOME")
           and (not name.startswith("GIT_") or name in _HOST_GIT_VARIABLES)}
    # Ask nothing: a missing credential is an error, not a prompt (nor
    # SSH_ASKPASS's helper, which git would otherwise ask for a password).
    return {**env, "HOME": home, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}


def _git(args: list[str], cwd: Path, url: str) -> str:
    from runtime.executor import scratch_dir  # ~20 ms to import, for a build that runs git

    program = shutil.which("git")
    if program is None:
        raise GitError("fetching a git repository needs git on PATH")
    home = scratch_dir(None, "pybuild-git-")
    try:
        done = lifeline.run([program, *_CONFINED, *args], cwd=cwd, env=_environment(str(home)), text=True,
                            timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} {url}: timed out") from None
    finally:
        remove_tree(home, ignore_errors=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        # git's first fatal line holds the cause; a submodule's retries end
        # with a line that hides it ("Failed to clone 'x' a second time").
        fatal = [line.removeprefix("fatal: ") for line in lines if line.startswith("fatal: ")]
        detail = fatal[0] if fatal else lines[-1] if lines else f"git {args[0]} exited {done.returncode}"
        raise GitError(f"failed to fetch git repository {url}: {detail}")
    return done.stdout


def _check(url: str, ref: str) -> None:
    if url.startswith("-"):
        raise GitError(f"invalid git repository URL {url!r}")
    if ref.startswith("-"):
        raise GitError(f"failed to fetch git repository {url}: invalid ref {ref!r}")


def resolve_commit(url: str, ref: str, cwd: Path) -> str:
    """The commit `ref` names now (what a cache key must depend on)."""
    _check(url, ref)
    if _COMMIT.match(ref):
        return ref
    wanted = ref or "HEAD"
    lines = _git(["ls-remote", "--", url, wanted], cwd, url).splitlines()
    for line in lines:
        sha, _, name = line.partition("\t")
        if name in (wanted, f"refs/heads/{wanted}", f"refs/tags/{wanted}^{{}}"):
            return sha
    if lines:
        return lines[0].split("\t", 1)[0]
    raise GitError(f"failed to fetch git repository {url}: ref {wanted!r} not found")


def checkout(url: str, ref: str, dest: Path, *, keep_git_dir: bool = False) -> str:
    """Fill the empty directory `dest` with the tree of `ref`; returns its
    commit (a git context's provenance names it)."""
    _check(url, ref)
    _git(["init", "-q", "--", str(dest)], dest.parent, url)
    _git(["remote", "add", "--", "origin", url], dest, url)
    _git(["fetch", "-q", "--depth", "1", "--", "origin", ref or "HEAD"], dest, url)
    _git(["checkout", "-q", "FETCH_HEAD"], dest, url)
    if (dest / ".gitmodules").exists():
        _git(["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"], dest, url)
    commit = _git(["rev-parse", "HEAD"], dest, url).strip()
    if not keep_git_dir:
        shutil.rmtree(dest / ".git", ignore_errors=True)
    return commit


class GitImpl:
    """ADD <git url>: the tree of one ref, alone in a snapshot, for a
    FileCopy to read. The key holds the commit the ref names now, so a new
    commit on a branch rebuilds, as BuildKit's git source does."""

    def __init__(self, op: GitSource, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        self.op = op
        self.vertex = vertex
        self.session = session
        self._commit: str | None = None

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        self._commit = resolve_commit(self.op.remote, self.op.ref, self.session.tmp)
        if self.session.record is not None:
            from builder.attest.record import git_material_url

            self.session.record.add_git(git_material_url(self.op.remote, self.op.ref), self._commit)
        return cache_key(self.op.canonical(), input_keys, self._commit)

    def execute(self, inputs, cancel):
        snapshots = self.session.snapshots
        snapshot = snapshots.create()
        try:
            checkout(self.op.remote, self._commit or self.op.ref, snapshots.fs_path(snapshot),
                     keep_git_dir=self.op.keep_git_dir)
        except BaseException:
            snapshots.remove(snapshot)
            raise
        return (snapshot,)
