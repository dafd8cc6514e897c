"""NaCl's secretbox (XSalsa20 + Poly1305), the cipher of cosign's encrypted
private keys.

`cryptography` has Poly1305 but no Salsa20 (ChaCha20 is its successor, not
the same function), so XSalsa20 is written here from Bernstein's papers
("The Salsa20 family of stream ciphers", "Extending the Salsa20 nonce").
It runs in pure Python: it only ever encrypts a private key of ~140
bytes, three 64-byte blocks. Nothing else of pybuild may use it as a
general cipher.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.hazmat.primitives.poly1305 import Poly1305

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16

_MASK = 0xFFFFFFFF
# "expand 32-byte k", the constants of a 256-bit key, little-endian words.
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
# Each quarter-round's four state positions: four columns, then four rows.
_COLUMNS = ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11))
_ROWS = ((0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14))


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _rounds(state: list[int]) -> list[int]:
    """Salsa20's 20 rounds (10 double rounds) on a copy of `state`."""
    x = list(state)
    for _ in range(10):
        for a, b, c, d in _COLUMNS + _ROWS:
            x[b] ^= _rotl((x[a] + x[d]) & _MASK, 7)
            x[c] ^= _rotl((x[b] + x[a]) & _MASK, 9)
            x[d] ^= _rotl((x[c] + x[b]) & _MASK, 13)
            x[a] ^= _rotl((x[d] + x[c]) & _MASK, 18)
    return x


def _state(key: bytes, middle: bytes) -> list[int]:
    """The 16-word input: constants on the diagonal, the key's halves
    around the 16 bytes of nonce (and, for Salsa20, counter) in the middle."""
    k = struct.unpack("<8I", key)
    m = struct.unpack("<4I", middle)
    return [_SIGMA[0], *k[:4], _SIGMA[1], *m, _SIGMA[2], *k[4:], _SIGMA[3]]


def hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    """The 32-byte subkey of XSalsa20: the rounds without the final
    addition, read at the constants' and the nonce's positions."""
    x = _rounds(_state(key, nonce16))
    return struct.pack("<8I", *(x[i] for i in (0, 5, 10, 15, 6, 7, 8, 9)))


def _salsa20_stream(key: bytes, nonce8: bytes, length: int) -> bytes:
    blocks = []
    for counter in range((length + 63) // 64):
        state = _state(key, nonce8 + struct.pack("<Q", counter))
        mixed = _rounds(state)
        blocks.append(struct.pack("<16I", *((a + b) & _MASK for a, b in zip(mixed, state))))
    return b"".join(blocks)[:length]


def xsalsa20_stream(key: bytes, nonce: bytes, length: int) -> bytes:
    """`length` bytes of XSalsa20 keystream for a 32-byte key and 24-byte nonce."""
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("XSalsa20 takes a 32-byte key and a 24-byte nonce")
    return _salsa20_stream(hsalsa20(key, nonce[:16]), nonce[16:], length)


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream))


def seal(key: bytes, nonce: bytes, message: bytes) -> bytes:
    """secretbox: the Poly1305 tag, then the ciphertext. The keystream's
    first 32 bytes are the one-time Poly1305 key; the message is XORed
    with what follows."""
    stream = xsalsa20_stream(key, nonce, 32 + len(message))
    ciphertext = _xor(message, stream[32:])
    return Poly1305.generate_tag(stream[:32], ciphertext) + ciphertext


def open_box(key: bytes, nonce: bytes, box: bytes) -> bytes | None:
    """The message of a box `seal` made with this key and nonce; None when
    the tag does not match (a wrong key, or altered bytes)."""
    if len(box) < TAG_SIZE:
        return None
    tag, ciphertext = box[:TAG_SIZE], box[TAG_SIZE:]
    stream = xsalsa20_stream(key, nonce, 32 + len(ciphertext))
    if not hmac.compare_digest(Poly1305.generate_tag(stream[:32], ciphertext), tag):
        return None
    return _xor(ciphertext, stream[32:])
