"""Issue 18, signatures: `pybuild sign` and `pybuild verify` against cosign
2.x (the oracle) in the registry fixture. cosign accepts what pybuild
signed and pybuild what cosign signed, with cosign's encrypted keys (either
tool's) and plain PKCS#8 ones; a signature moved to another digest, an
altered payload, a corrupted payload blob or the wrong key fail in both.

Every test signs its own copy of one built image (its own repository), so
the signatures of one test never meet another's.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from builder.image import OCI_INDEX, Descriptor, canonical_json
from builder.registry.client import RegistryClient
from builder.registry.reference import Reference
from builder.signing.keys import encrypt_private_key, public_key_pem
from builder.signing.payload import make_payload
from builder.signing.store import SIGNATURE_ANNOTATION, SignatureImage, append_signature
from cache.digest import Digest
from cache.store import ContentStore
from fixtures.pybuild import pybuild_env
from fixtures.registry import remove_registry, start_registry
from fixtures.signing import PASSWORD, cosign_key_pair, cosign_verify, pybuild, plain_key, run, sig_manifest
from fixtures.tools import require_tools, trixie_tool

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Signing:
    work: Path
    cosign: str
    registry: str      # host:port
    built: str         # the pushed image, by tag
    digest: Digest     # its manifest's

    @property
    def key(self) -> str:
        return str(self.work / "cosign.key")

    @property
    def pub(self) -> str:
        return str(self.work / "cosign.pub")

    def copy(self, repository: str, source: str | None = None, *, tag: str = "1", all_images: bool = False) -> str:
        """The built image (or `source`) under a repository of the test's own."""
        ref = f"{self.registry}/{repository}:{tag}"
        command = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                   "--preserve-digests"]
        subprocess.run([*command, *(["--all"] if all_images else []), f"docker://{source or self.built}",
                        f"docker://{ref}"], check=True, capture_output=True, timeout=120)
        return ref


@pytest.fixture(scope="module")
def signing(busybox_image, registry, tmp_path_factory) -> Signing:
    require_tools("skopeo")
    cosign = trixie_tool("cosign")
    work = tmp_path_factory.mktemp("signing")
    cosign_key_pair(cosign, work)
    context = work / "ctx"
    context.mkdir()
    (context / "hello").write_text("signed content\n")
    (context / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nCOPY hello /hello\n")
    built = f"{registry.host}/signing/app:1"
    # One image manifest, no attestation index: the tests copy it by digest
    # (an attested index is signed in test_push_sign.py and test_attest_e2e.py).
    done = pybuild(work, "build", "-t", built, "--push", "--provenance=false", "--metadata-file",
                   str(work / "meta.json"), str(context))
    assert done.returncode == 0, done.stderr
    digest = Digest.parse(json.loads((work / "meta.json").read_text())["containerimage.digest"])
    return Signing(work, cosign, registry.host, built, digest)


def test_cosign_verifies_what_pybuild_signed(signing, tmp_path):
    ref = signing.copy("sign/by-pybuild")
    signed = pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD)
    assert signed.returncode == 0, signed.stderr
    assert f"sha256-{signing.digest.hex}.sig" in signed.stdout

    checked = cosign_verify(signing.cosign, tmp_path, signing.pub, ref)
    assert checked.returncode == 0, checked.stderr
    [claims] = json.loads(checked.stdout)
    assert claims["critical"]["image"]["docker-manifest-digest"] == str(signing.digest)
    assert claims["critical"]["identity"]["docker-reference"] == ref.rsplit(":", 1)[0]

    ours = pybuild(tmp_path, "verify", "--key", signing.pub, ref)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.count("Verified ") == 1 and str(signing.digest) in ours.stdout

    # Signing again with the same key adds nothing, as cosign's duplicate check.
    again = pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD)
    assert again.returncode == 0 and "Already signed" in again.stdout
    [layer] = sig_manifest(ref, signing.digest)["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"


def test_pybuild_verifies_what_cosign_signed_and_appends_to_it(signing, tmp_path):
    ref = signing.copy("sign/by-cosign")
    pinned = f"{ref.rsplit(':', 1)[0]}@{signing.digest}"
    signed = run([signing.cosign, "sign", "--key", signing.key, "--tlog-upload=false", "-y", pinned], tmp_path,
                 COSIGN_PASSWORD=PASSWORD)
    assert signed.returncode == 0, signed.stderr
    ours = pybuild(tmp_path, "verify", "--key", signing.pub, ref)
    assert ours.returncode == 0, ours.stderr
    assert "Verified " in ours.stdout

    # A second signature, by an unencrypted PKCS#8 key: no password asked
    # (stdin is not a terminal and COSIGN_PASSWORD is unset).
    plain, plain_pub = plain_key(tmp_path, "plain")
    appended = pybuild(tmp_path, "sign", "--key", plain, ref)
    assert appended.returncode == 0, appended.stderr
    assert len(sig_manifest(ref, signing.digest)["layers"]) == 2
    for pub in (signing.pub, plain_pub):
        checked = cosign_verify(signing.cosign, tmp_path, pub, ref)
        assert checked.returncode == 0, (pub, checked.stderr)
        ours = pybuild(tmp_path, "verify", "--key", pub, ref)
        assert ours.returncode == 0 and ours.stdout.count("Verified ") == 1, ours.stderr


def test_cosign_signs_with_a_key_pybuild_encrypted(signing, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ours.key").write_bytes(encrypt_private_key(key, b"pybuild-password"))
    (tmp_path / "ours.pub").write_bytes(public_key_pem(key.public_key()))
    ref = signing.copy("sign/pybuild-key")
    signed = run([signing.cosign, "sign", "--key", str(tmp_path / "ours.key"), "--tlog-upload=false", "-y",
                  f"{ref.rsplit(':', 1)[0]}@{signing.digest}"], tmp_path, COSIGN_PASSWORD="pybuild-password")
    assert signed.returncode == 0, signed.stderr
    ours = pybuild(tmp_path, "verify", "--key", str(tmp_path / "ours.pub"), ref)
    assert ours.returncode == 0, ours.stderr


def test_an_index_digest_is_signed(signing, busybox_index, tmp_path):
    ref = signing.copy("sign/index", busybox_index.ref, all_images=True)
    signed = pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD)
    assert signed.returncode == 0, signed.stderr
    assert f"sha256-{busybox_index.digest.hex}.sig" in signed.stdout
    checked = cosign_verify(signing.cosign, tmp_path, signing.pub, ref)
    assert checked.returncode == 0, checked.stderr
    [claims] = json.loads(checked.stdout)
    assert claims["critical"]["image"]["docker-manifest-digest"] == str(busybox_index.digest)


def _both_refuse(signing: Signing, tmp_path: Path, pub: str, ref: str, reason: str) -> None:
    checked = cosign_verify(signing.cosign, tmp_path, pub, ref)
    assert checked.returncode != 0, checked.stdout
    # A root of its own, as a verifier elsewhere: the signer's root holds
    # the genuine payload, which it would not download again.
    ours = pybuild(tmp_path, "verify", "--key", pub, ref, root="verifier")
    assert ours.returncode == 1 and "Verified" not in ours.stdout
    assert ours.stderr.count("\n") == 1 and "Traceback" not in ours.stderr
    assert reason in ours.stderr, ours.stderr


def test_wrong_key_fails_both(signing, tmp_path):
    ref = signing.copy("sign/wrong-key")
    assert pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD).returncode == 0
    _, other_pub = plain_key(tmp_path, "other")
    _both_refuse(signing, tmp_path, other_pub, ref, "does not match its payload with this key")


def test_signature_moved_to_another_manifest_fails_both(signing, busybox_image, tmp_path):
    ref = signing.copy("sign/moved")
    assert pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD).returncode == 0
    repository = ref.rsplit(":", 1)[0]
    # The tag now names busybox, and the built image's signature is copied
    # to busybox's .sig tag: the payload still names the built image.
    signing.copy("sign/moved", busybox_image.ref)
    other = busybox_image.digest
    signing.copy("sign/moved", f"{repository}:sha256-{signing.digest.hex}.sig", tag=f"sha256-{other.hex}.sig")
    _both_refuse(signing, tmp_path, signing.pub, ref, f"the payload signs {signing.digest}, not {other}")


def test_altered_payload_fails_both(signing, tmp_path):
    ref = signing.copy("sign/altered")
    assert pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD).returncode == 0
    [layer] = sig_manifest(ref, signing.digest)["layers"]
    signature = layer["annotations"][SIGNATURE_ANNOTATION]
    # The same claims with one more byte of whitespace, under the genuine
    # signature: the signature covers the bytes, not what they parse to.
    genuine = make_payload(Reference.parse(ref), signing.digest)
    forged = genuine[:-1] + b" }"
    store = ContentStore(tmp_path / "forger")
    client = RegistryClient(store)
    try:
        sig_ref = Reference.parse(f"{ref.rsplit(':', 1)[0]}:sha256-{signing.digest.hex}.sig")
        append_signature(client, store, SignatureImage(sig_ref, ()), forged, signature)
    finally:
        client.close()
    _both_refuse(signing, tmp_path, signing.pub, ref, "does not match its payload")


def test_corrupted_payload_blob_fails_both(signing, registry, tmp_path):
    ref = signing.copy("sign/corrupted")
    assert pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD).returncode == 0
    [layer] = sig_manifest(ref, signing.digest)["layers"]
    blob = registry.blob_file(layer["digest"])
    blob.write_bytes(blob.read_bytes().replace(str(signing.digest).encode(), str(Digest.of_bytes(b"x")).encode()))
    _both_refuse(signing, tmp_path, signing.pub, ref, "does not match")


def test_wrong_or_missing_password_is_one_line(signing, tmp_path):
    ref = signing.copy("sign/password")
    wrong = pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD="not-it")
    assert wrong.returncode == 1
    assert wrong.stderr == f"ERROR: cannot decrypt the private key {signing.key}: wrong password\n"
    missing = pybuild(tmp_path, "sign", "--key", signing.key, ref)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "set COSIGN_PASSWORD" in missing.stderr
    # Nothing was pushed.
    unsigned = pybuild(tmp_path, "verify", "--key", signing.pub, ref)
    assert unsigned.returncode == 1
    assert unsigned.stderr == f"ERROR: no signatures found for {ref.rsplit(':', 1)[0]}@{signing.digest}\n"


@pytest.mark.parametrize("args, message", [
    (("sign", "--key", "/nonexistent/cosign.key"), "cannot read the key /nonexistent/cosign.key"),
    (("sign", "--key", "{pub}"), "holds no private key"),
    (("verify", "--key", "{key}"), "holds no public key"),
])
def test_bad_keys_are_one_line(signing, tmp_path, args, message):
    args = [arg.format(pub=signing.pub, key=signing.key) for arg in args]
    done = pybuild(tmp_path, *args, signing.built, COSIGN_PASSWORD=PASSWORD)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr


def test_signature_copied_to_another_repository_names_the_first(signing, tmp_path):
    """pybuild checks the payload's docker-reference; cosign 2.x does not
    (measured: it accepts the copy), a difference docs/signing.md explains."""
    ref = signing.copy("sign/origin")
    assert pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD).returncode == 0
    copy = signing.copy("sign/copy")
    tag = f"sha256-{signing.digest.hex}.sig"
    signing.copy("sign/copy", f"{ref.rsplit(':', 1)[0]}:{tag}", tag=tag)
    assert cosign_verify(signing.cosign, tmp_path, signing.pub, copy).returncode == 0
    ours = pybuild(tmp_path, "verify", "--key", signing.pub, copy)
    assert ours.returncode == 1
    assert f"the payload names {signing.registry}/sign/origin, not {signing.registry}/sign/copy" in ours.stderr


def test_password_is_asked_on_a_terminal(signing, tmp_path):
    """Without COSIGN_PASSWORD and with a terminal, the password is read
    from it with echo off (getpass), as cosign asks."""
    ref = signing.copy("sign/terminal")
    controller, terminal = os.openpty()
    # A session of its own: no /dev/tty to open, so getpass reads the terminal on stdin.
    process = subprocess.Popen(["pybuild", "sign", "--key", signing.key, ref, "--root", str(tmp_path / "root")],
                               stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, env=pybuild_env(tmp_path), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while termios.tcgetattr(terminal)[3] & termios.ECHO:  # until getpass turns echo off
            assert time.monotonic() < deadline and process.poll() is None, "the password was never asked"
            time.sleep(0.05)
        os.write(controller, f"{PASSWORD}\n".encode())
        stdout, stderr = process.communicate(timeout=120)
        echoed = b""
        while select.select([controller], [], [], 0.2)[0]:
            try:
                echoed += os.read(controller, 1024)
            except OSError:  # the terminal's other end is closed
                break
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 0, stderr
    assert "password" in stderr.lower()
    assert PASSWORD.encode() not in echoed
    assert cosign_verify(signing.cosign, tmp_path, signing.pub, ref).returncode == 0


def test_signatures_are_read_from_the_registry_not_a_mirror(signing, tmp_path):
    """A pull mirror holding an older .sig image: signing appends to the
    registry's own (the signature added since stays), and verifying reads
    the registry's."""
    ref = signing.copy("sign/mirrored")
    repository = ref.rsplit(":", 1)[0]
    tag = f"sha256-{signing.digest.hex}.sig"
    assert pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD).returncode == 0
    mirror = start_registry(tmp_path / "mirror")
    try:
        for name in ("1", tag):
            subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                            "--preserve-digests", f"docker://{repository}:{name}",
                            f"docker://{mirror.host}/sign/mirrored:{name}"], check=True, capture_output=True,
                           timeout=120)
        since, since_pub = plain_key(tmp_path, "since")
        assert pybuild(tmp_path, "sign", "--key", since, ref).returncode == 0
        config = tmp_path / "config.toml"
        config.write_text(f'[registry."{signing.registry}"]\nmirrors = ["{mirror.host}"]\n')
        latest, _ = plain_key(tmp_path, "latest")
        signed = pybuild(tmp_path, "sign", "--key", latest, ref, "--config", str(config))
        assert signed.returncode == 0, signed.stderr
        assert len(sig_manifest(ref, signing.digest)["layers"]) == 3
        verified = pybuild(tmp_path, "verify", "--key", since_pub, ref, "--config", str(config), root="verifier")
        assert verified.returncode == 0, verified.stderr
    finally:
        remove_registry(mirror)
    assert cosign_verify(signing.cosign, tmp_path, since_pub, ref).returncode == 0


def test_sign_and_verify_with_token_auth(signing, token_registry, auth_registry, tmp_path):
    """Credentials of `pybuild login` reach the registry's token server for
    the push scope signing needs; cosign, reading the same docker config,
    verifies the signature."""
    token_reg, _ = token_registry
    user, password = auth_registry.username, auth_registry.password
    ref = f"{token_reg.host}/sign/protected:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    "--preserve-digests", "--dest-creds", f"{user}:{password}", f"docker://{signing.built}",
                    f"docker://{ref}"], check=True, capture_output=True, timeout=120)
    anonymous = pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD)
    assert anonymous.returncode == 1 and "unauthorized" in anonymous.stderr and "Traceback" not in anonymous.stderr
    login = subprocess.run(["pybuild", "login", token_reg.host, "-u", user, "--password-stdin"], input=password,
                           capture_output=True, text=True, timeout=60, env=pybuild_env(tmp_path))
    assert login.returncode == 0, login.stderr
    signed = pybuild(tmp_path, "sign", "--key", signing.key, ref, COSIGN_PASSWORD=PASSWORD)
    assert signed.returncode == 0, signed.stderr
    verified = pybuild(tmp_path, "verify", "--key", signing.pub, ref, root="verifier")
    assert verified.returncode == 0, verified.stderr
    assert cosign_verify(signing.cosign, tmp_path, signing.pub, ref).returncode == 0


def test_an_index_without_linux_amd64_is_signed_by_tag(signing, busybox_index, tmp_path):
    """The tag of an arm64-only index names the index itself (RegistryClient.manifest
    chooses no platform): signing and verifying by tag need no linux/amd64 entry."""
    full = signing.copy("sign/arm64-only", busybox_index.ref, tag="full", all_images=True)
    store = ContentStore(tmp_path / "maker")
    client = RegistryClient(store)
    try:
        whole, body = client.manifest(Reference.parse(full))
        assert whole.digest == busybox_index.digest and len(body["manifests"]) == 2
        arm64 = [entry for entry in body["manifests"] if entry["digest"] == str(busybox_index.arm64)]
        data = canonical_json(dict(body, manifests=arm64))
        index = Descriptor(OCI_INDEX, store.put_bytes(data), len(data))
        ref = Reference.parse(full).with_tag("1")
        client.put_manifest(ref, index)
        named, named_body = client.manifest(ref)
        assert (named.digest, named.media_type, named_body) == (index.digest, OCI_INDEX, json.loads(data))
        assert store.read_bytes(index.digest) == data
    finally:
        client.close()

    signed = pybuild(tmp_path, "sign", "--key", signing.key, str(ref), COSIGN_PASSWORD=PASSWORD)
    assert signed.returncode == 0, signed.stderr
    assert f"sha256-{index.digest.hex}.sig" in signed.stdout
    checked = cosign_verify(signing.cosign, tmp_path, signing.pub, str(ref))
    assert checked.returncode == 0, checked.stderr
    [claims] = json.loads(checked.stdout)
    assert claims["critical"]["image"]["docker-manifest-digest"] == str(index.digest)
    ours = pybuild(tmp_path, "verify", "--key", signing.pub, str(ref), root="verifier")
    assert ours.returncode == 0 and str(index.digest) in ours.stdout, ours.stderr
