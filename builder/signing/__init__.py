"""cosign-compatible image signatures: simple-signing payloads signed with
ECDSA P-256 keys, stored under the `sha256-<digest>.sig` tag.

    keys.py       cosign's encrypted private keys, PEM PKCS#8 keys, public keys
    secretbox.py  XSalsa20-Poly1305 (PyNaCl), which cosign's key encryption uses
    payload.py    the simple-signing payload: what a signature claims
    store.py      the .sig images in the registry; origin_client(store, hosts)
    sign.py       sign_image(client, store, ref, digest, key) -> Signed
    verify.py     verify_image(client, store, ref, public_key) -> Verification

Keyless signing (Fulcio certificates, Rekor entries) is out of scope:
docs/signing.md.
"""
