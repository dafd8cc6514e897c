"""Keys as cosign writes them: ECDSA P-256 only.

A private key is either cosign's own encrypted file or a plain PEM one:

    -----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----   (cosign 2.x; cosign 1.x
    -----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----      wrote this label)
    base64 of {"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"},
               "cipher": {"name": "nacl/secretbox", "nonce"},
               "ciphertext"}

where the bytes fields are base64 (Go's []byte), the secretbox key is
scrypt(password, salt, N, r, p) of 32 bytes, and the sealed message is the
key's PKCS#8 DER (go-securesystemslib's `encrypted` package, which cosign
uses). A plain one is PKCS#8 (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY`
with a password), or SEC 1 (`EC PRIVATE KEY`). A public key is PKIX
(`PUBLIC KEY`), as `cosign generate-key-pair` writes cosign.pub.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from typing import Callable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from builder.signing import secretbox
from builder.signing.errors import SigningError

SIGSTORE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
# What cosign 2.x writes (go-securesystemslib's default parameters).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 16, 8, 1
# A key file is input: its scrypt parameters must not make us allocate
# gigabytes or spin for minutes (scrypt takes 128 * N * r bytes).
MAX_SCRYPT_MEMORY = 256 << 20
MAX_SCRYPT_P = 16
MAX_KEY_FILE = 64 << 10

Password = Callable[[], bytes]


def _pem_blocks(text: str) -> list[tuple[str, bytes]]:
    """Each `-----BEGIN X-----` block of a PEM file as (label, body)."""
    blocks = []
    label = None
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN ") and line.endswith("-----"):
            label, lines = line[11:-5], []
        elif label is not None and line == f"-----END {label}-----":
            try:
                blocks.append((label, base64.b64decode("".join(lines), validate=True)))
            except binascii.Error:
                raise SigningError(f"malformed PEM block {label}: invalid base64") from None
            label = None
        elif label is not None and ":" not in line:  # skip RFC 1421 headers
            lines.append(line)
    return blocks


def _b64field(body: dict, *path: str) -> bytes:
    value = body
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    if not isinstance(value, str):
        raise SigningError(f"malformed cosign key: {'.'.join(path)} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise SigningError(f"malformed cosign key: {'.'.join(path)} is not base64") from None


def _scrypt_key(kdf: dict, password: bytes) -> bytes:
    params = kdf.get("params") if isinstance(kdf, dict) else None
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt" or not isinstance(params, dict):
        raise SigningError("unsupported cosign key: the key derivation is not scrypt")
    n, r, p = (params.get(name) for name in ("N", "r", "p"))
    if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in (n, r, p)):
        raise SigningError("malformed cosign key: scrypt parameters N, r, p must be positive integers")
    if n < 2 or n & (n - 1) or 128 * n * r > MAX_SCRYPT_MEMORY or p > MAX_SCRYPT_P:
        raise SigningError(f"unsupported cosign key: scrypt parameters N={n} r={r} p={p} are out of range")
    salt = _b64field({"kdf": kdf}, "kdf", "salt")
    try:
        return Scrypt(salt=salt, length=secretbox.KEY_SIZE, n=n, r=r, p=p).derive(password)
    except (MemoryError, ValueError):
        # OpenSSL refuses more than the memory bound (RFC 7914 wants
        # N < 2**(16*r)); `cryptography` reports that as MemoryError.
        raise SigningError(f"unsupported cosign key: scrypt parameters N={n} r={r} p={p} are refused") from None


def _decrypt_cosign(blob: bytes, password: Password, name: str) -> bytes:
    """The PKCS#8 DER inside cosign's encrypted key."""
    try:
        body = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SigningError(f"malformed cosign key {name}: not JSON") from None
    if not isinstance(body, dict):
        raise SigningError(f"malformed cosign key {name}: not a JSON object")
    cipher = body.get("cipher")
    if not isinstance(cipher, dict) or cipher.get("name") != "nacl/secretbox":
        raise SigningError(f"unsupported cosign key {name}: the cipher is not nacl/secretbox")
    nonce = _b64field(body, "cipher", "nonce")
    if len(nonce) != secretbox.NONCE_SIZE:
        raise SigningError(f"malformed cosign key {name}: the nonce is not {secretbox.NONCE_SIZE} bytes")
    sealed = _b64field(body, "ciphertext")
    secret = _scrypt_key(body.get("kdf"), password())
    der = secretbox.open_box(secret, nonce, sealed)
    if der is None:
        raise SigningError(f"cannot decrypt the private key {name}: wrong password")
    return der


def read_key_file(path: str) -> bytes:
    """The bytes of the key file `path`: a regular file of at most
    MAX_KEY_FILE bytes, no more than that ever read (a FIFO, a device or
    a huge file is refused, not waited on or loaded)."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SigningError(f"cannot read the key {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SigningError(f"{path} is not a key: not a regular file")
        if st.st_size > MAX_KEY_FILE:
            raise SigningError(f"{path} is not a key: larger than {MAX_KEY_FILE} bytes")
        try:
            data = os.read(fd, MAX_KEY_FILE + 1)
        except OSError as exc:
            raise SigningError(f"cannot read the key {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:  # it grew after fstat
        raise SigningError(f"{path} is not a key: larger than {MAX_KEY_FILE} bytes")
    return data


def _p256_private(key, name: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningError(f"unsupported private key {name}: only ECDSA P-256 keys are supported")
    return key


def load_private_key(data: bytes, password: Password, name: str = "key") -> ec.EllipticCurvePrivateKey:
    """The signing key in `data` (a file named `name`, for messages).
    `password()` is called only for an encrypted key, once."""
    if len(data) > MAX_KEY_FILE:
        raise SigningError(f"{name} is not a key: larger than {MAX_KEY_FILE} bytes")
    text = data.decode("ascii", errors="replace")
    for label, body in _pem_blocks(text):
        try:
            if label in (SIGSTORE_LABEL, COSIGN_LABEL):
                key = serialization.load_der_private_key(_decrypt_cosign(body, password, name), None)
            elif label == "ENCRYPTED PRIVATE KEY":
                key = serialization.load_der_private_key(body, password())
            elif label in ("PRIVATE KEY", "EC PRIVATE KEY"):
                key = serialization.load_der_private_key(body, None)
            else:
                continue
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningError(f"cannot read the private key {name}: {exc}") from None
        return _p256_private(key, name)
    raise SigningError(f"{name} holds no private key (expected a cosign key or a PEM PKCS#8 key)")


def load_public_key(data: bytes, name: str = "key") -> ec.EllipticCurvePublicKey:
    """The verification key in `data`: a PEM `PUBLIC KEY` of ECDSA P-256."""
    if len(data) > MAX_KEY_FILE:
        raise SigningError(f"{name} is not a key: larger than {MAX_KEY_FILE} bytes")
    for label, body in _pem_blocks(data.decode("ascii", errors="replace")):
        if label != "PUBLIC KEY":
            continue
        try:
            key = serialization.load_der_public_key(body)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningError(f"cannot read the public key {name}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise SigningError(f"unsupported public key {name}: only ECDSA P-256 keys are supported")
        return key
    raise SigningError(f"{name} holds no public key (expected a PEM PUBLIC KEY, as cosign.pub)")


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """`key` as cosign 2.x writes cosign.key: what `cosign sign --key` reads."""
    salt, nonce = os.urandom(32), os.urandom(secretbox.NONCE_SIZE)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    secret = Scrypt(salt=salt, length=secretbox.KEY_SIZE, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(password)
    # Go's encoding/json order of go-securesystemslib's structs, compact.
    body = json.dumps({
        "kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(secretbox.seal(secret, nonce, der)).decode(),
    }, separators=(",", ":")).encode()
    return _pem(SIGSTORE_LABEL, body)


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(label: str, body: bytes) -> bytes:
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()
