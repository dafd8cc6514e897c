"""Fetching one ref of a git repository, for git contexts and `ADD <git url>`.

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
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from builder.errors import PybuildError

_TIMEOUT = 600  # seconds for one git command
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_CONFINED = ("-c", "protocol.file.allow=never", "-c", "protocol.ext.allow=never")


class GitError(PybuildError):
    pass


def _git(args: list[str], cwd: Path, url: str) -> str:
    # Ask nothing on a terminal: a missing credential is an error, not a prompt.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        # subprocess.run kills git if we are interrupted (Ctrl-C) meanwhile.
        done = subprocess.run(["git", *_CONFINED, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=_TIMEOUT)
    except FileNotFoundError:
        raise GitError("fetching a git repository needs git on PATH") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} {url}: timed out") from None
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


def checkout(url: str, ref: str, dest: Path, *, keep_git_dir: bool = False) -> None:
    """Fill the empty directory `dest` with the tree of `ref`."""
    _check(url, ref)
    _git(["init", "-q", "--", str(dest)], dest.parent, url)
    _git(["remote", "add", "--", "origin", url], dest, url)
    _git(["fetch", "-q", "--depth", "1", "--", "origin", ref or "HEAD"], dest, url)
    _git(["checkout", "-q", "FETCH_HEAD"], dest, url)
    if (dest / ".gitmodules").exists():
        _git(["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"], dest, url)
    if not keep_git_dir:
        shutil.rmtree(dest / ".git", ignore_errors=True)
