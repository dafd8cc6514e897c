"""NaCl's secretbox (XSalsa20 + Poly1305), the cipher of cosign's encrypted
private keys, from PyNaCl (libsodium): `cryptography` has Poly1305 but no
Salsa20, and a cipher is not code to write ourselves."""

from __future__ import annotations

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

KEY_SIZE = SecretBox.KEY_SIZE
NONCE_SIZE = SecretBox.NONCE_SIZE


def seal(key: bytes, nonce: bytes, message: bytes) -> bytes:
    """Poly1305 tag then ciphertext, as Go's secretbox.Seal writes them."""
    return SecretBox(key).encrypt(message, nonce).ciphertext


def open_box(key: bytes, nonce: bytes, box: bytes) -> bytes | None:
    """The message, or None when the tag does not authenticate it (a wrong
    key: a wrong password)."""
    try:
        return SecretBox(key).decrypt(box, nonce)
    except CryptoError:
        return None
