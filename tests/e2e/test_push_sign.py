"""Issue 18: `pybuild push NAME --sign key=FILE` pushes, then signs the
pushed digest (an index's own for a multi-platform name) as `pybuild sign`
does; cosign 2.x (the oracle) verifies it. The key is read before anything
is uploaded: a wrong or missing password, a bad --sign value or an unreadable
key leaves the registry without the repository at all.

One module root holds the built images; each test pushes its own names.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from cache.digest import Digest
from fixtures.signing import PASSWORD, cosign_key_pair, cosign_verify, plain_key, pybuild, run, sig_manifest
from fixtures.tools import require_tools, trixie_tool

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Built:
    work: Path          # holds the root (work/root) and the key pair
    cosign: str
    registry: object    # the registry fixture
    key: str
    pub: str

    def name(self, repository: str, source: str) -> str:
        """A name of the test's own for the stored image `source`."""
        target = f"{self.registry.host}/{repository}:1"
        tagged = pybuild(self.work, "tag", source, target)
        assert tagged.returncode == 0, tagged.stderr
        return target

    def push(self, name: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
        return pybuild(self.work, "push", *flags, name, **env)

    def repository_exists(self, repository: str) -> bool:
        """Whether the registry has anything of `repository`: a blob upload
        or a manifest creates its directory."""
        return (self.registry.storage / "docker/registry/v2/repositories" / repository).exists()


@pytest.fixture(scope="module")
def built(busybox_image, busybox_index, registry, tmp_path_factory) -> Built:
    """`one`: a single-platform image; `two`: linux/amd64 + linux/arm64
    (COPY only, no emulator needed), both in the local store only."""
    require_tools("skopeo")
    cosign = trixie_tool("cosign")
    work = tmp_path_factory.mktemp("push-sign")
    key, pub = cosign_key_pair(cosign, work)
    for name, base, platforms in (("one", busybox_image.ref, "linux/amd64"),
                                  ("two", busybox_index.ref, "linux/amd64,linux/arm64")):
        context = work / name
        context.mkdir()
        (context / "hello").write_text(f"pushed and signed: {name}\n")
        (context / "Dockerfile").write_text(f"FROM {base}\nCOPY hello /hello\n")
        done = pybuild(work, "build", "--platform", platforms, "-t", name, str(context))
        assert done.returncode == 0, done.stderr
    return Built(work, cosign, registry, key, pub)


def pushed_digest(done: subprocess.CompletedProcess, name: str) -> Digest:
    match = re.search(rf"^{re.escape(name)}: digest: (sha256:[0-9a-f]{{64}})$", done.stdout, re.MULTILINE)
    assert match, done.stdout
    return Digest.parse(match.group(1))


def registry_digest(name: str) -> tuple[Digest, dict]:
    """The digest and body of what the tag names in the registry (skopeo reads it)."""
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{name}"],
                         check=True, capture_output=True, timeout=60).stdout
    return Digest.parse(f"sha256:{hashlib.sha256(raw).hexdigest()}"), json.loads(raw)


def assert_signed(built: Built, tmp_path: Path, name: str, digest: Digest, pub: str) -> None:
    checked = cosign_verify(built.cosign, tmp_path, pub, name)
    assert checked.returncode == 0, checked.stderr
    [claims] = json.loads(checked.stdout)
    assert claims["critical"]["image"]["docker-manifest-digest"] == str(digest)
    assert claims["critical"]["identity"]["docker-reference"] == name.rsplit(":", 1)[0]
    ours = pybuild(tmp_path, "verify", "--key", pub, name, root="verifier")
    assert ours.returncode == 0 and ours.stdout.count("Verified ") == 1, ours.stderr


def test_push_sign_signs_the_pushed_manifest(built, tmp_path):
    name = built.name("push-sign/one", "one")
    done = built.push(name, "--sign", f"key={built.key}", COSIGN_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    digest = pushed_digest(done, name)
    assert registry_digest(name)[0] == digest
    assert f"Pushed signature to {name.rsplit(':', 1)[0]}:sha256-{digest.hex}.sig" in done.stdout
    assert_signed(built, tmp_path, name, digest, built.pub)


def test_push_sign_of_an_index_signs_the_index(built, tmp_path):
    name = built.name("push-sign/two", "two")
    done = built.push(name, "--sign", f"key={built.key}", COSIGN_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    digest = pushed_digest(done, name)
    in_registry, body = registry_digest(name)
    assert in_registry == digest and len(body["manifests"]) >= 2  # the index, not a platform's image
    assert_signed(built, tmp_path, name, digest, built.pub)


def test_push_sign_with_a_plain_key_twice_signs_once(built, tmp_path):
    """An unencrypted PKCS#8 key needs no password (none is set, stdin is
    no terminal); pushing again signs nothing more, as `pybuild sign`."""
    name = built.name("push-sign/plain", "one")
    key, pub = plain_key(tmp_path, "plain")
    first = built.push(name, "--sign", f"key={key}")
    assert first.returncode == 0, first.stderr
    again = built.push(name, "--sign", f"key={key}")
    assert again.returncode == 0 and "Already signed by this key" in again.stdout, again.stderr
    digest = pushed_digest(again, name)
    assert len(sig_manifest(name, digest)["layers"]) == 1
    assert_signed(built, tmp_path, name, digest, pub)


@pytest.mark.parametrize("case, flags, env, message", [
    ("wrong-password", ("--sign", "key={key}"), {"COSIGN_PASSWORD": "not-it"},
     "ERROR: cannot decrypt the private key {key}: wrong password"),
    ("no-password", ("--sign", "key={key}"), {}, "set COSIGN_PASSWORD"),
    ("bare-file", ("--sign", "{key}"), {"COSIGN_PASSWORD": PASSWORD}, "expected key=FILE"),
    ("other-option", ("--sign", "keyless=true"), {"COSIGN_PASSWORD": PASSWORD}, "expected key=FILE"),
    ("missing-key", ("--sign", "key=/nonexistent/cosign.key"), {}, "cannot read the key /nonexistent/cosign.key"),
    ("public-key", ("--sign", "key={pub}"), {}, "holds no private key"),
])
def test_a_key_that_cannot_sign_uploads_nothing(built, case, flags, env, message):
    repository = f"push-sign/refused-{case}"
    name = built.name(repository, "two")
    flags = [flag.format(key=built.key, pub=built.pub) for flag in flags]
    done = built.push(name, *flags, **env)
    assert done.returncode == 1, done.stdout
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert message.format(key=built.key) in done.stderr
    assert "digest:" not in done.stdout
    assert not built.repository_exists(repository)
    # The same push with the right key then goes through: what stopped it was the key.
    fine = built.push(name, "--sign", f"key={built.key}", COSIGN_PASSWORD=PASSWORD)
    assert fine.returncode == 0 and built.repository_exists(repository), fine.stderr


def test_push_without_sign_leaves_no_signature(built, tmp_path):
    name = built.name("push-sign/unsigned", "one")
    done = built.push(name)
    assert done.returncode == 0 and "signature" not in done.stdout, done.stderr
    checked = run(["pybuild", "verify", "--key", built.pub, name, "--root", str(tmp_path / "root")], tmp_path)
    assert checked.returncode == 1 and "no signatures found" in checked.stderr
