"""Red team, issue 18 (provenance, SBOM, signatures): attacks through the
CLI on what the supply-chain features promise. An xfail(strict) test is an
attack that works today (its reason is the diagnosis); a plain test is an
attack that fails as it should, kept as a regression test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from security.redteam_mp_checks import write_context
from security.redteam_sc_checks import (Remote, assert_absent, attestations, cosign_key, ok, readable_bytes,
                                         requests_status, run, run_measured, secret_build, spdx_errors)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base(busybox_image):
    return busybox_image.ref


def _image_entries(index: dict) -> list[str]:
    return [e["digest"] for e in index["manifests"]
            if (e.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"]


# --- the truth of what is pushed ----------------------------------------------


@pytest.mark.parametrize("compression", ["", ",compression=uncompressed"])
def test_push_of_a_stored_attested_index_keeps_attestations_bound(base, registry, tmp_path, compression):
    ctx = write_context(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "stored then pushed\n"})
    name = f"{registry.host}/rt-sc-stored{len(compression)}:1"
    root = str(tmp_path / "root")
    ok(run(tmp_path, "build", "--root", root, "--sbom=true", "-o",
           f"type=image,name={name}{compression}", str(ctx)))
    ok(run(tmp_path, "push", "--root", root, name))
    remote = Remote(registry.host, f"rt-sc-stored{len(compression)}")
    _, index = remote.manifest("1")
    images = _image_entries(index)
    found = attestations(remote, index)
    assert found, index
    for reference, statements in found:
        assert reference in images, (reference, images)
        for statement in statements:
            assert [s["digest"]["sha256"] for s in statement["subject"]] == [reference.split(":")[1]]


# --- the SBOM scanner on hostile filesystems ------------------------------------


def _sbom_of_local(tmp_path: Path, ctx: Path, *extra: str) -> tuple[object, Path]:
    dest = tmp_path / "out"
    done = run(tmp_path, "build", "--root", str(tmp_path / "root"), "--sbom=true", *extra,
               "-o", f"type=local,dest={dest}", str(ctx))
    return done, dest / "sbom.spdx.json"


def _package_names(sbom: Path) -> set[str]:
    document = json.loads(sbom.read_text())["predicate"]
    return {p["name"] for p in document["packages"]}


def test_sbom_follows_no_symlink_to_host_files(tmp_path):
    """Package databases (and the directories holding them) that are
    symlinks to host paths: the scanner reads the build's filesystem only."""
    host = tmp_path / "host"
    (host / "nm" / "hostnpm").mkdir(parents=True)
    (host / "nm" / "hostnpm" / "package.json").write_text('{"name": "host-npm-secret", "version": "1.0.0"}')
    (host / "dist").mkdir()
    (host / "dist" / "METADATA").write_text("Metadata-Version: 2.1\nName: host-py-secret\nVersion: 1.0\n")
    (host / "status").write_text("Package: host-dpkg-secret\nVersion: 1.0\nStatus: install ok installed\n")
    (host / "installed").write_text("P:host-apk-secret\nV:1.0\n")
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    tree = ctx / "root"
    for path, target in [("var/lib/dpkg/status", host / "status"), ("lib/apk/db/installed", host / "installed"),
                         ("usr/lib/node_modules", host / "nm"),
                         ("usr/lib/python3/dist-packages/evil-1.0.dist-info", host / "dist"),
                         ("etc/os-release", Path("/etc/os-release"))]:
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).symlink_to(target)
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    names = _package_names(sbom)
    assert not any("secret" in name for name in names), names
    assert "host-" not in sbom.read_text()


def test_sbom_of_a_deeply_nested_package_json_is_no_traceback(tmp_path):
    bomb = "[" * 200_000 + "]" * 200_000
    ctx = write_context(tmp_path, "FROM scratch\nCOPY node_modules /node_modules\n")
    (ctx / "node_modules" / "bomb").mkdir(parents=True)
    (ctx / "node_modules" / "bomb" / "package.json").write_text(bomb)
    (ctx / "node_modules" / "fine").mkdir(parents=True)
    (ctx / "node_modules" / "fine" / "package.json").write_text('{"name": "fine", "version": "2.0.0"}')
    done, sbom = _sbom_of_local(tmp_path, ctx)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    ok(done)
    assert "fine" in _package_names(sbom)


def test_sbom_of_a_huge_dpkg_status_is_bounded(tmp_path):
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    status = ctx / "root" / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("".join(f"Package: p{i}\nVersion: 1\nStatus: install ok installed\n\n"
                              for i in range(150_000)))   # 8.5 MB
    dest = tmp_path / "out"
    code, stderr, peak = run_measured(tmp_path, "build", "--root", str(tmp_path / "root"), "--sbom=true",
                                      "-o", f"type=local,dest={dest}", str(ctx))
    assert "Traceback" not in stderr, stderr[-2000:]
    assert code in (0, 1), stderr[-2000:]
    # Refused in one line, or scanned within a sane budget.
    assert peak < 512 << 20, f"peak RSS {peak >> 20} MB"


def test_sbom_forgets_a_database_replaced_by_a_symlink(tmp_path):
    ctx = write_context(tmp_path, "FROM scratch\nCOPY one/ /\nCOPY two/ /\n")
    status = ctx / "one" / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: stale-package\nVersion: 1.0\nStatus: install ok installed\n")
    replaced = ctx / "two" / "var" / "lib" / "dpkg" / "status"
    replaced.parent.mkdir(parents=True)
    replaced.symlink_to("/nonexistent/status")
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    assert (tmp_path / "out" / "var" / "lib" / "dpkg" / "status").is_symlink()
    assert "stale-package" not in _package_names(sbom)


def test_sbom_of_a_tree_deeper_than_path_max(base, tmp_path):
    """A RUN step nests node_modules past PATH_MAX; the image builds and
    exports without --sbom, so it must with it too."""
    segment = "node_modules/" + "d" * 200
    script = (f"i=0; while [ $i -lt 25 ]; do mkdir -p {segment} && cd {segment}; i=$((i+1)); done; "
              "mkdir -p node_modules/deep && "
              "echo '{\"name\":\"deep-one\",\"version\":\"1.0.0\"}' > node_modules/deep/package.json")
    ctx = write_context(tmp_path, f"FROM {base}\nWORKDIR /app\nRUN {script}\n")
    try:
        plain = run(tmp_path, "build", "--root", str(tmp_path / "root"), "-o",
                    f"type=tar,dest={tmp_path / 'plain.tar'}", str(ctx))
        assert plain.returncode == 0, plain.stderr[-1000:]
        done, sbom = _sbom_of_local(tmp_path, ctx)
        assert "Traceback" not in done.stderr
        assert done.returncode == 0, done.stderr[-400:]
        assert "deep-one" in _package_names(sbom)
    finally:
        # Deeper than PATH_MAX: the leak check's walk could not stat it.
        subprocess.run(["rm", "-rf", str(tmp_path / "root"), str(tmp_path / "out")], check=True)


# --- secrets in attestations and outputs ----------------------------------------


@pytest.mark.parametrize("version", ["v0.2", "v1"])
def test_no_secret_value_in_max_provenance_sbom_or_outputs(base, tmp_path, version):
    """--secret (file and env), --ssh and COSIGN_PASSWORD in the
    environment: none of their values or paths in the OCI archive (blobs
    decompressed), the metadata file or the progress output."""
    out = tmp_path / "out.tar"
    attest = "type=provenance,mode=max" + (",version=v1" if version == "v1" else "")
    done = ok(secret_build(tmp_path, base, attest, f"type=oci,dest={out}", COSIGN_PASSWORD="rtCosignPw4411"))
    everything = (readable_bytes(out) + (tmp_path / "meta.json").read_bytes()
                  + done.stdout.encode() + done.stderr.encode())
    assert b"https://slsa.dev/provenance/" in everything and b"PLAIN" in everything
    assert_absent(everything, "rtFileSecret7731", "rtEnvSecret5519", "rtAgentSocketPath", "rtCosignPw4411")


@pytest.mark.parametrize("version", ["v0.2", "v1"])
def test_no_url_password_in_max_provenance(base, tmp_path, version):
    dest = tmp_path / "out"
    attest = "type=provenance,mode=max" + (",version=v1" if version == "v1" else "")
    ok(secret_build(tmp_path, base, attest, f"type=local,dest={dest}", url_password="rtUrlPassword2207"))
    provenance = (dest / "provenance.json").read_bytes()
    assert b"127.0.0.1" in provenance   # the material is there, its password must not be
    assert_absent(provenance + (dest / "sbom.spdx.json").read_bytes(), "rtUrlPassword2207")


# --- signing keys -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sign", "build"])
def test_scrypt_parameters_openssl_refuses_are_one_error(registry, tmp_path, command):
    key = cosign_key(tmp_path / "odd.key", 1 << 16, 1, 1)
    name = f"{registry.host}/rt-sc-scrypt:1"
    if command == "sign":
        done = run(tmp_path, "sign", "--root", str(tmp_path / "root"), "--key", key, name, COSIGN_PASSWORD="pw")
    else:
        ctx = write_context(tmp_path, "FROM scratch\nCOPY Dockerfile /\n")
        done = run(tmp_path, "build", "--root", str(tmp_path / "root"), "-o",
                   f"type=registry,name={name},sign={key}", str(ctx), COSIGN_PASSWORD="pw")
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.returncode == 1
    assert len([line for line in done.stderr.splitlines() if line.startswith(("ERROR", "Error"))]) == 1, done.stderr
    assert requests_status(f"http://{registry.host}/v2/rt-sc-scrypt/manifests/1") == 404


HOSTILE_NAMES = ["evil\nname", "quote\"and\\back", "pkg:npm/x@1?y=z#frag", "SPDXRef-DOCUMENT", "../../etc",
                 "sp ace", "uni\u202ecode", "x" * 5000, "NOASSERTION", "@scope/../other"]


def test_sbom_of_hostile_package_names_is_valid_spdx(tmp_path):
    """Names and versions with newlines, quotes, URL syntax, SPDX keywords
    and bidi controls: the document stays valid SPDX 2.3, one package each
    with an SPDXID of its own."""
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    status = ctx / "root" / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    paragraphs = [f"Package: {name.replace(chr(10), ' ')}\nVersion: 1:{name[:20].replace(chr(10), '')}\n"
                  f"Status: install ok installed\nMaintainer: {name[:30]} <{name[:30]}>\n" for name in HOSTILE_NAMES]
    status.write_text("\n".join(paragraphs))
    for n, name in enumerate(HOSTILE_NAMES):
        package = ctx / "root" / "node_modules" / f"p{n}" / "package.json"
        package.parent.mkdir(parents=True)
        package.write_text(json.dumps({"name": name, "version": name[:50], "license": "MIT", "author": name,
                                       "homepage": name}))
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    document = json.loads(sbom.read_text())["predicate"]
    assert spdx_errors(document) == []


def test_sbom_of_unknown_license_words_is_valid_spdx(tmp_path):
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    package = ctx / "root" / "node_modules" / "private" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text('{"name": "private", "version": "1.0.0", "license": "UNLICENSED"}')
    metadata = ctx / "root" / "usr" / "lib" / "python3" / "site-packages" / "inhouse-2.0.dist-info" / "METADATA"
    metadata.parent.mkdir(parents=True)
    metadata.write_text("Metadata-Version: 2.1\nName: inhouse\nVersion: 2.0\nLicense: Proprietary\n")
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    document = json.loads(sbom.read_text())["predicate"]
    assert {p["name"] for p in document["packages"]} >= {"private", "inhouse"}
    assert spdx_errors(document) == []
    # The directory root and the two packages, neither declaring a license SPDX knows.
    assert len({p["SPDXID"] for p in document["packages"]}) == 3
    assert {p["licenseDeclared"] for p in document["packages"]} == {"NOASSERTION"}


def test_sbom_of_a_maintainer_without_a_name_is_valid_spdx(tmp_path):
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    status = ctx / "root" / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: teamed\nVersion: 1.0\nStatus: install ok installed\n"
                      "Maintainer: <team@example.org>\n")
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    document = json.loads(sbom.read_text())["predicate"]
    assert spdx_errors(document) == []


# --- no attestation when none is wanted ----------------------------------------------


@pytest.mark.parametrize("flags, env", [
    (["--provenance=false"], {}),
    ([], {"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}),
    (["--attest", "type=provenance,disabled=true"], {}),
    (["--sbom=false"], {"BUILDX_NO_DEFAULT_ATTESTATIONS": "true"}),
])
def test_no_default_attestation_pushes_a_plain_manifest(base, registry, tmp_path, flags, env):
    ctx = write_context(tmp_path, f"FROM {base}\nCOPY Dockerfile /\n")
    repository = f"rt-sc-plain-{abs(hash(tuple(flags) + tuple(env))) % 10**8}"
    name = f"{registry.host}/{repository}:1"
    out = tmp_path / "out.tar"
    ok(run(tmp_path, "build", "--root", str(tmp_path / "root"), *flags, "-o", f"type=registry,name={name}",
           "-o", f"type=oci,dest={out}", str(ctx), **env))
    _, body = Remote(registry.host, repository).manifest("1")
    assert body["mediaType"] == "application/vnd.oci.image.manifest.v1+json", body
    assert b"in-toto" not in readable_bytes(out)


# --- provenance materials are what was used -------------------------------------------


def _push_base(tmp_path: Path, base: str, name: str, marker: str) -> str:
    """Push an image whose /which says `marker` under `name`; its manifest digest."""
    work = tmp_path / f"base-{marker}"
    work.mkdir()
    ctx = write_context(work, f"FROM {base}\nRUN echo {marker} > /which\n")
    meta = work / "meta.json"
    ok(run(tmp_path, "build", "--root", str(tmp_path / "base-root"), "--provenance=false", "--metadata-file",
           str(meta), "-o", f"type=registry,name={name}", str(ctx)))
    return json.loads(meta.read_text())["containerimage.digest"]


@pytest.mark.parametrize("pull", [False, True])
def test_provenance_names_the_base_the_build_used_after_its_tag_moved(base, registry, tmp_path, pull):
    name = f"{registry.host}/rt-sc-moving-{int(pull)}:1"
    first = _push_base(tmp_path, base, name, "first")
    (tmp_path / "app").mkdir()
    ctx = write_context(tmp_path / "app", f"FROM {name}\nCOPY Dockerfile /app-dockerfile\n")
    root = str(tmp_path / "root")
    ok(run(tmp_path, "build", "--root", root, "-o", f"type=local,dest={tmp_path / 'warm'}", str(ctx)))
    second = _push_base(tmp_path, base, name, "second")
    assert first != second
    dest = tmp_path / "out"
    ok(run(tmp_path, "build", "--root", root, *(["--pull"] if pull else []), "--provenance=mode=max",
           "-o", f"type=local,dest={dest}", str(ctx)))
    used = {"first": first, "second": second}[(dest / "which").read_text().strip()]
    materials = json.loads((dest / "provenance.json").read_text())["predicate"]["materials"]
    [material] = [m for m in materials if "rt-sc-moving" in m["uri"]]
    assert "sha256:" + material["digest"]["sha256"] == used, (material, first, second)


def test_a_huge_key_file_is_refused_without_reading_it(registry, tmp_path):
    key = tmp_path / "huge.key"
    with open(key, "wb") as sparse:
        sparse.truncate(512 << 20)   # sparse: no disk used
    code, stderr, peak = run_measured(tmp_path, "sign", "--root", str(tmp_path / "root"), "--key", str(key),
                                      f"{registry.host}/rt-sc-hugekey:1")
    assert code == 1 and "Traceback" not in stderr, stderr[-1500:]
    assert peak < 256 << 20, f"peak RSS {peak >> 20} MB"


def test_sbom_sees_a_database_behind_an_in_image_symlink(tmp_path):
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    dpkg = ctx / "root" / "var" / "lib" / "dpkg"
    dpkg.mkdir(parents=True)
    (dpkg / "status.real").write_text("Package: hidden-tool\nVersion: 6.6\nStatus: install ok installed\n")
    (dpkg / "status").symlink_to("status.real")
    apk = ctx / "root" / "lib" / "apk" / "db"
    apk.mkdir(parents=True)
    (apk / "installed.real").write_text("P:hidden-apk\nV:1.0-r0\n")
    (apk / "installed").symlink_to("/lib/apk/db/installed.real")
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    assert {"hidden-tool", "hidden-apk"} <= _package_names(sbom)


# --- verify against cosign's verdict ---------------------------------------------------


def test_verify_refuses_a_payload_digest_cosign_refuses(base, registry, tmp_path):
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from builder.image import canonical_json
    from builder.registry.client import RegistryClient
    from builder.registry.reference import Reference
    from builder.signing.payload import docker_reference
    from builder.signing.store import SignatureImage, append_signature, signature_ref
    from cache.digest import Digest
    from cache.store import ContentStore
    from fixtures.signing import cosign_verify, plain_key
    from fixtures.tools import trixie_tool

    name = f"{registry.host}/rt-sc-newline:1"
    ctx = write_context(tmp_path, f"FROM {base}\nCOPY Dockerfile /\n")
    meta = tmp_path / "meta.json"
    ok(run(tmp_path, "build", "--root", str(tmp_path / "root"), "--provenance=false", "--metadata-file", str(meta),
           "-o", f"type=registry,name={name}", str(ctx)))
    digest = Digest.parse(json.loads(meta.read_text())["containerimage.digest"])
    private, public = plain_key(tmp_path, "signer")
    key = serialization.load_pem_private_key(Path(private).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ref = Reference.parse(name)
    payload = canonical_json({"critical": {"identity": {"docker-reference": docker_reference(ref)},
                                           "image": {"docker-manifest-digest": f"{digest}\n"},
                                           "type": "cosign container image signature"}, "optional": None})
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    store = ContentStore(tmp_path / "forger")
    client = RegistryClient(store)
    try:
        append_signature(client, store, SignatureImage(signature_ref(ref, digest), ()), payload, signature)
    finally:
        client.close()
    assert cosign_verify(trixie_tool("cosign"), tmp_path, public, name).returncode != 0
    done = run(tmp_path, "verify", "--root", str(tmp_path / "root"), "--key", public, name)
    assert done.returncode == 1, done.stdout


def test_sbom_splits_dpkg_lines_as_dpkg_does(tmp_path):
    """dpkg-query --admindir over the same status (measured) lists sneaky
    1.0 and honest 2.0 installed, and no `injected`."""
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    status = ctx / "root" / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: sneaky\nStatus: install ok installed\nVersion: 1.0\n"
                      "Description: harmless\u2028Status: deinstall ok config-files\n\n"
                      "Package: honest\nStatus: install ok installed\nVersion: 2.0\n"
                      "Description: fine\u2028\u2028Package: injected\u2028Version: 9.9\n", encoding="utf-8")
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    names = _package_names(sbom)
    assert {"sneaky", "honest"} <= names and "injected" not in names, names


def test_sbom_reads_dpkg_field_names_case_insensitively(tmp_path):
    ctx = write_context(tmp_path, "FROM scratch\nCOPY root/ /\n")
    status = ctx / "root" / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("package: lower\nstatus: install ok installed\nversion: 3.0\n")
    done, sbom = _sbom_of_local(tmp_path, ctx)
    ok(done)
    assert "lower" in _package_names(sbom)
