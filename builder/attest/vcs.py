"""The git checkout a local context lives in, as buildx reports it to
BuildKit (`vcs:source`, `vcs:revision`, `vcs:localdir:*` build options):
BuildKit copies them, unverified, into the provenance's metadata.

buildx runs `git rev-parse` and `git remote get-url`; two git processes
cost ~14 ms here, more than a whole provenance may take, so the repository
files are read directly (HEAD, its ref or packed-refs, the remotes of the
config). A repository this reader does not understand (reftable refs, an
unborn branch) gives no vcs hints, as buildx gives none outside a checkout.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

GIT_INFO_ENV = "BUILDX_GIT_INFO"
_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_SECTION = re.compile(r'^\s*\[\s*remote\s+"((?:[^"\\]|\\.)*)"\s*\]\s*$')
_URL = re.compile(r"^\s*url\s*=\s*(.*?)\s*$", re.IGNORECASE)


def local_vcs(context_dir: str | os.PathLike, dockerfile_dir: str | os.PathLike | None = None,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`{"source", "revision", "localdir:context", "localdir:dockerfile"}`
    (the keys without buildx's `vcs:` prefix), or {} outside a checkout or
    when BUILDX_GIT_INFO is false."""
    environ = os.environ if environ is None else environ
    if environ.get(GIT_INFO_ENV, "").lower() in ("0", "f", "false"):
        return {}
    context = Path(os.path.abspath(context_dir))
    found = _repository(context)
    if found is None:
        return {}
    top, git_dir, common_dir = found
    revision = _head(git_dir, common_dir)
    if revision is None:
        return {}
    vcs = {"revision": revision}
    remote = _remote_url(common_dir)
    if remote:
        vcs["source"] = _without_user(remote)
    vcs["localdir:context"] = _relative(context, top)
    if dockerfile_dir is not None:
        vcs["localdir:dockerfile"] = _relative(Path(os.path.abspath(dockerfile_dir)), top)
    return vcs


def _relative(path: Path, top: Path) -> str:
    try:
        return path.relative_to(top).as_posix() or "."
    except ValueError:  # the Dockerfile outside the checkout: buildx leaves it out too
        return "."


def _repository(start: Path) -> tuple[Path, Path, Path] | None:
    """(work tree top, git dir, common dir) of the checkout holding `start`."""
    for top in (start, *start.parents):
        dot_git = top / ".git"
        try:
            if dot_git.is_dir():
                git_dir = dot_git
            elif dot_git.is_file():
                # A worktree or a submodule: ".git" names the real git dir.
                text = dot_git.read_text().strip()
                if not text.startswith("gitdir:"):
                    return None
                git_dir = (top / text[len("gitdir:"):].strip()).resolve()
            else:
                continue
            common = git_dir
            if (git_dir / "commondir").is_file():
                common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        except OSError:
            return None
        return top, git_dir, common
    return None


def _head(git_dir: Path, common_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if _COMMIT.match(head):
        return head  # detached
    if not head.startswith("ref:"):
        return None
    ref = head[4:].strip()
    for base in (git_dir, common_dir):
        try:
            value = (base / ref).read_text().strip()
        except OSError:
            continue
        return value if _COMMIT.match(value) else None
    try:
        packed = (common_dir / "packed-refs").read_text()
    except OSError:
        return None
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref and _COMMIT.match(sha):
            return sha
    return None


def _remote_url(common_dir: Path) -> str:
    """origin's URL, else the first remote's (gitutil's choice in buildx)."""
    try:
        text = (common_dir / "config").read_text()
    except OSError:
        return ""
    urls: dict[str, str] = {}
    section = None
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            section = match.group(1)
            continue
        if line.lstrip().startswith("["):
            section = None
            continue
        if section is not None and section not in urls:
            url = _URL.match(line)
            if url:
                urls[section] = url.group(1).strip('"')
    return urls.get("origin") or next(iter(urls.values()), "")


def _without_user(url: str) -> str:
    """The remote without its user info, as buildx's stripCredentials
    gives it: a CI checkout's remote often carries a token as the user name
    (https://TOKEN@host/...), not only as a password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # scp-like user@host:path: the user there is an account name, not a credential
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
