"""ADD https://...: download one file, as BuildKit's http source does
(`fetch_url`, which URL contexts use too), alone in a snapshot (`HttpImpl`).

- The file is written with mode 0600 (BuildKit's default, and docker's) and
  its mtime is the response's Last-Modified, or the Unix epoch without one,
  so the same bytes from the same server give the same layer.
- The file name is the one the Dockerfile frontend chose, else the
  Content-Disposition filename, else the last segment of the URL path,
  else "download" (BuildKit's getFileName).
- `checksum` (ADD --checksum=sha256:...) is verified before the file is
  published; a mismatch leaves nothing behind.
- Only responses 200-399 are accepted (requests follows redirects).
- Credentials are the URL's own (`https://user:pass@host/...`) and nobody
  else's: the host's `~/.netrc` is never read (builder.registry.transport.Session),
  as BuildKit's http source reads none; proxies come from HTTP_PROXY,
  HTTPS_PROXY and NO_PROXY, as in BuildKit.

The download goes to a temp file next to `dest_file` and is renamed into
place, so a reader never sees a partial file.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import posixpath
import shutil
import tempfile
import urllib.parse
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from builder.errors import PybuildError
from builder.solver.keys import CacheKey, cache_key
from cache.digest import Digest
from frontend.canonical import canonical_bytes
from frontend.ops import HttpSource, Op
from runtime.confine import Refused, check_name

FILE_MODE = 0o600
DEFAULT_FILENAME = "download"
_CHUNK = 1 << 20
_TIMEOUT = (30, 300)  # connect, read (seconds between bytes)
_ALGORITHMS = ("sha256", "sha384", "sha512")

if TYPE_CHECKING:
    import requests

    from builder.solver.session import BuildSession


class FetchError(PybuildError):
    """A URL that could not be downloaded or did not match its checksum."""


def fetch_url(url: str, dest_file: Path, checksum: str | Digest | None = None, *,
              filename: str = "", max_size: int | None = None) -> tuple[str, Digest]:
    """Download `url` to `dest_file`; returns (file name for the image, sha256).
    More than `max_size` bytes (`[limits] max_add_url_size`) fail the
    download, checked on Content-Length first and then on the bytes read."""
    # Imported here: every build imports this module (for its op), few fetch
    # a URL, and requests costs ~0.13 s of CPU to import (docs/benchmarks.md).
    import requests

    from builder.registry.transport import Session

    expected_alg, expected_hex = _parse_checksum(checksum)
    dest_file = Path(dest_file)
    shown = redact(url)
    with Session() as http:
        try:
            response = http.get(url, stream=True, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            raise FetchError(f"failed to fetch {shown}: {exc}") from exc
        return _save(response, shown, url, dest_file, expected_alg, expected_hex, filename, max_size)


def _save(response: requests.Response, shown: str, url: str, dest_file: Path, expected_alg: str,
          expected_hex: str, filename: str, max_size: int | None) -> tuple[str, Digest]:
    """The response's body written to `dest_file` (see fetch_url)."""
    import requests

    with response:
        if response.status_code < 200 or response.status_code >= 400:
            raise FetchError(f"failed to fetch {shown}: invalid response status {response.status_code}")
        if max_size is not None and _content_length(response) > max_size:
            raise _too_large(shown, max_size)
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=dest_file.parent)
        tmp = Path(tmp_name)
        try:
            sha256 = hashlib.sha256()
            verify = hashlib.new(expected_alg) if expected_alg and expected_alg != "sha256" else sha256
            with os.fdopen(fd, "wb") as out:
                try:
                    written = 0
                    for chunk in response.iter_content(_CHUNK):
                        written += len(chunk)
                        if max_size is not None and written > max_size:
                            raise _too_large(shown, max_size)
                        sha256.update(chunk)
                        if verify is not sha256:
                            verify.update(chunk)
                        out.write(chunk)
                except requests.RequestException as exc:
                    raise FetchError(f"failed to fetch {shown}: {exc}") from exc
            if expected_hex and verify.hexdigest() != expected_hex:
                raise FetchError(f"digest mismatch for {shown}: {expected_alg}:{verify.hexdigest()} "
                                 f"(expected: {expected_alg}:{expected_hex})")
            os.chmod(tmp, FILE_MODE)
            mtime_ns = _last_modified_ns(response.headers.get("Last-Modified", ""))
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.replace(tmp, dest_file)
        finally:
            tmp.unlink(missing_ok=True)
        name = filename or _filename_from(response.headers.get("Content-Disposition", ""), url)
    return name, Digest("sha256", sha256.hexdigest())


def _too_large(shown: str, max_size: int) -> FetchError:
    return FetchError(f"failed to fetch {shown}: larger than {max_size} bytes "
                      "(the config file's [limits] max_add_url_size)")


def _content_length(response) -> int:
    try:
        return int(response.headers.get("Content-Length") or 0)
    except ValueError:
        return 0  # the bytes read are counted anyway


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port
    except ValueError:  # unusable (fetching it fails): all that could be a password goes
        scheme, _, rest = url.partition("://")
        return f"{scheme}://xxxxx@{rest.rpartition('@')[2]}" if "@" in rest else url
    if parts.password is None:
        return url
    netloc = f"{parts.username}:xxxxx@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _parse_checksum(checksum: str | Digest | None) -> tuple[str, str]:
    if not checksum:
        return "", ""
    text = str(checksum)
    alg, sep, hex_ = text.partition(":")
    if not sep or alg not in _ALGORITHMS or not hex_ or any(c not in "0123456789abcdef" for c in hex_):
        raise FetchError(f"invalid checksum {text!r}: expected sha256:<hex> (or sha384/sha512)")
    if len(hex_) != hashlib.new(alg).digest_size * 2:
        raise FetchError(f"invalid checksum {text!r}: wrong length for {alg}")
    return alg, hex_


def _last_modified_ns(header: str) -> int:
    if not header:
        return 0
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return 0  # BuildKit ignores an unparsable date too
    return int(when.timestamp()) * 1_000_000_000


def _filename_from(content_disposition: str, url: str) -> str:
    if content_disposition:
        msg = Message()
        msg["Content-Disposition"] = content_disposition
        param = msg.get_filename()
        if param and not param.endswith("/"):
            base = posixpath.basename(param.replace("\\", "/"))
            if base not in ("", ".", ".."):
                return base
    path = urllib.parse.urlsplit(url).path
    base = posixpath.basename(posixpath.normpath(path)) if path else ""
    # unquoted after taking the base name: "%2F" must not make a path
    base = posixpath.basename(urllib.parse.unquote(base))
    if base in ("", ".", ".."):
        return DEFAULT_FILENAME
    return base


class HttpImpl:
    """The downloaded file, alone in a snapshot, for a FileCopy to read.

    Without --checksum the content decides the key, so the file is fetched
    while keying (as BuildKit re-checks a URL on every build)."""

    def __init__(self, op: HttpSource, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        self.op = op
        self.vertex = vertex
        self.session = session
        self._download: tuple[Path, str, str] | None = None

    def _fetch(self) -> tuple[Path, str, str]:
        if self._download is None:
            path = self.session.tmp / f"download-{self.vertex[7:23]}"
            limits = self.session.options.size_limits
            name, digest = fetch_url(self.op.url, path, self.op.checksum or None, filename=self.op.filename,
                                     max_size=limits.max_add_url_size if limits is not None else None)
            self._download = (path, name, str(digest))
            if self.session.record is not None:
                self.session.record.add_http(self.op.url, digest)
        return self._download

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        if self.op.checksum:
            return cache_key(self.op.canonical(), input_keys, self.op.checksum)
        # What the response decides of the file, as BuildKit's http source
        # keys it: the bytes and the mtime (Last-Modified, which fetch_url
        # set on the download); the name is the frontend's, in the op.
        path, _, digest = self._fetch()
        content = {"checksum": digest, "mtime_ns": path.stat().st_mtime_ns}
        return cache_key(self.op.canonical(), input_keys, canonical_bytes(content).decode())

    def execute(self, inputs, cancel):
        path, name, _ = self._fetch()
        try:
            # The frontend names the file; a name that is not plain (`..`)
            # would put the download beside the snapshot, not in it.
            check_name(name)
        except Refused:
            raise FetchError(f"ADD {redact(self.op.url)}: {name!r} is not a plain file name") from None
        snapshots = self.session.snapshots
        snapshot = snapshots.create()
        try:
            target = snapshots.fs_path(snapshot) / name
            shutil.copy2(path, target)
        except BaseException:
            snapshots.remove(snapshot)
            raise
        return (snapshot,)
