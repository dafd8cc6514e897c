"""builder.signing.keys and secretbox against keys cosign 2.x made: the
encrypted key below is `COSIGN_PASSWORD=secret cosign generate-key-pair`'s
output, so decrypting it checks scrypt, XSalsa20 and Poly1305 together
(a wrong keystream bit fails the Poly1305 tag)."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from builder.registry.reference import Reference
from builder.signing import secretbox
from builder.signing.errors import SigningError
from builder.signing.keys import (
    SIGSTORE_LABEL,
    encrypt_private_key,
    load_private_key,
    load_public_key,
    public_key_pem,
    read_key_file,
)
from builder.signing.payload import make_payload
from builder.signing.verify import signature_matches
from cache.digest import Digest

COSIGN_KEY = b"""\
-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJFQnFsYXJYSHpBOHYrSm53b1l5cXBpT2l3SXBBU1pu
K29za3c3UXhXeDNVPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJNSUdXanNhbUhieGlhUWNKSDczOU9Vbm5UcSszeUNWVyJ9LCJj
aXBoZXJ0ZXh0IjoiZmMralZVV0JqYWY1QWZRVGRzL2dhK3NEODRpUHcvMEs0QkpG
dGtLa25aZUVYdE9Lb1pyamtrUHNneHpwTG1tWThWM05PZlNBMVhUc29KcENqdnZt
dURPaUo5U0phMkNSUUxTRnI5UW1xN0RxUDFKckhmMTk5RUZPYUFZQmpmekNsTStW
YUpjUk5LeDl2QllxOURlVTNnT0d6Tnd6cFBiKzJJTVVyV2Q1S2xrb243QVgyMTVT
UmdZNko3QnJkL3dPQ0M0RTh4QTFML0dkd1E9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
"""
COSIGN_PUB = b"""\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEp0gp/Va6fJ0VjLS8fbwnq5XzVxEG
pD9ozqMThKA+2JJZlzCQmBUKemhYk2aT6AlZ8j0+OxBRSKt5kg6vK+Q1nA==
-----END PUBLIC KEY-----
"""
# What `cosign sign --key` with that key put in the annotation of the
# payload of 127.0.0.1:41835/bb@sha256:6035... (test_signing_payload).
COSIGN_SIGNATURE = "MEQCIB3N1LCpe3cgn/ze1wr73yEoaSfikaeeVwe6f1dIhfHEAiBtn3ida1PVMDh54C9AqhoJA05lts25+DNyh2/QgYINxg=="


def _password(value: bytes):
    calls = []

    def ask():
        calls.append(1)
        return value
    return ask, calls


def _body(pem: bytes) -> dict:
    lines = [line for line in pem.decode().splitlines() if not line.startswith("-----")]
    return json.loads(base64.b64decode("".join(lines)))


def _pem(label: str, body: dict) -> bytes:
    text = base64.b64encode(json.dumps(body).encode()).decode()
    return f"-----BEGIN {label}-----\n{text}\n-----END {label}-----\n".encode()


def test_cosign_key_decrypts_to_its_public_key():
    ask, calls = _password(b"secret")
    key = load_private_key(COSIGN_KEY, ask)
    assert calls == [1]
    assert public_key_pem(key.public_key()) == COSIGN_PUB
    assert load_public_key(COSIGN_PUB).public_numbers() == key.public_key().public_numbers()


def test_cosign_1_label_reads_the_same_format():
    old = _pem("ENCRYPTED COSIGN PRIVATE KEY", _body(COSIGN_KEY))
    assert public_key_pem(load_private_key(old, lambda: b"secret").public_key()) == COSIGN_PUB


def test_wrong_password_is_one_clear_error():
    with pytest.raises(SigningError, match="cannot decrypt the private key cosign.key: wrong password"):
        load_private_key(COSIGN_KEY, lambda: b"Secret", name="cosign.key")


def test_altered_ciphertext_is_refused_by_the_tag():
    body = _body(COSIGN_KEY)
    sealed = bytearray(base64.b64decode(body["ciphertext"]))
    sealed[40] ^= 1
    body["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(SigningError, match="wrong password"):
        load_private_key(_pem(SIGSTORE_LABEL, body), lambda: b"secret")


def test_hostile_scrypt_parameters_are_refused_before_deriving():
    body = _body(COSIGN_KEY)
    body["kdf"]["params"]["N"] = 1 << 30  # 1 TiB of scrypt memory
    with pytest.raises(SigningError, match="out of range"):
        load_private_key(_pem(SIGSTORE_LABEL, body), lambda: b"secret")
    body["kdf"]["params"]["N"] = 1000  # not a power of two
    with pytest.raises(SigningError, match="out of range"):
        load_private_key(_pem(SIGSTORE_LABEL, body), lambda: b"secret")


def test_encrypted_round_trip_and_fresh_salt():
    key = ec.generate_private_key(ec.SECP256R1())
    first, second = encrypt_private_key(key, b"pw"), encrypt_private_key(key, b"pw")
    assert first.startswith(f"-----BEGIN {SIGSTORE_LABEL}-----\n".encode())
    assert _body(first)["kdf"]["salt"] != _body(second)["kdf"]["salt"]
    loaded = load_private_key(first, lambda: b"pw")
    assert loaded.private_numbers() == key.private_numbers()


def test_plain_pkcs8_key_never_asks_a_password():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    ask, calls = _password(b"unused")
    assert load_private_key(pem, ask).private_numbers() == key.private_numbers()
    assert calls == []


def test_other_curves_and_algorithms_are_refused():
    for key in (ec.generate_private_key(ec.SECP384R1()), ed25519.Ed25519PrivateKey.generate()):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        with pytest.raises(SigningError, match="only ECDSA P-256"):
            load_private_key(pem, lambda: b"")
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        with pytest.raises(SigningError, match="only ECDSA P-256"):
            load_public_key(public)


def test_files_that_are_not_keys():
    with pytest.raises(SigningError, match="holds no private key"):
        load_private_key(COSIGN_PUB, lambda: b"")
    with pytest.raises(SigningError, match="holds no public key"):
        load_public_key(COSIGN_KEY)
    with pytest.raises(SigningError, match="invalid base64"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningError, match="not JSON"):
        load_private_key(_pem(SIGSTORE_LABEL, {}).replace(b"e30=", b"AAAA"), lambda: b"")


def test_secretbox_round_trip_and_nonce_binding():
    key, nonce = bytes(range(32)), bytes(range(100, 124))
    box = secretbox.seal(key, nonce, b"a message longer than one 64-byte block of keystream" * 3)
    assert secretbox.open_box(key, nonce, box) == b"a message longer than one 64-byte block of keystream" * 3
    assert secretbox.open_box(key, bytes(24), box) is None
    assert secretbox.open_box(key, nonce, box[:10]) is None


def test_cosigns_signature_verifies_and_a_changed_byte_does_not():
    key = load_public_key(COSIGN_PUB)
    digest = Digest.parse("sha256:6035723755d93e1644e17bd35f914e48dbd0d96b696ca1209cbc59b4dea4d3da")
    payload = make_payload(Reference.parse("127.0.0.1:41835/bb:latest"), digest)
    assert signature_matches(key, payload, COSIGN_SIGNATURE)
    assert not signature_matches(key, payload.replace(b"6035", b"6036"), COSIGN_SIGNATURE)
    assert not signature_matches(key, payload, "not base64!")
    assert not signature_matches(key, payload, "AAAA")


def test_sec1_and_password_protected_pkcs8_keys():
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert load_private_key(sec1, lambda: b"").private_numbers() == key.private_numbers()
    protected = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pkcs8-pw"))
    assert protected.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_private_key(protected, lambda: b"pkcs8-pw").private_numbers() == key.private_numbers()
    with pytest.raises(SigningError, match="cannot read the private key"):
        load_private_key(protected, lambda: b"wrong")


def test_scrypt_parameters_openssl_refuses_are_one_error():
    # N >= 2**(16*r) (RFC 7914): within the memory bound, refused by
    # OpenSSL, which `cryptography` reports as MemoryError.
    body = _body(COSIGN_KEY)
    body["kdf"]["params"].update(N=1 << 16, r=1, p=1)
    with pytest.raises(SigningError, match="scrypt parameters N=65536 r=1 p=1 are refused"):
        load_private_key(_pem(SIGSTORE_LABEL, body), lambda: b"pw")


def test_key_files_are_read_bounded_and_regular_only(tmp_path):
    good = tmp_path / "cosign.key"
    good.write_bytes(COSIGN_KEY)
    assert read_key_file(str(good)) == COSIGN_KEY
    huge = tmp_path / "huge.key"
    with open(huge, "wb") as sparse:
        sparse.truncate(1 << 30)
    with pytest.raises(SigningError, match="larger than 65536 bytes"):
        read_key_file(str(huge))
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo)   # no writer: a reader that opened it blocking would wait forever
    for path in (fifo, tmp_path, "/dev/zero"):
        with pytest.raises(SigningError, match="not a regular file|Is a directory"):
            read_key_file(str(path))
    with pytest.raises(SigningError, match="cannot read the key .*No such file"):
        read_key_file(str(tmp_path / "missing.key"))
