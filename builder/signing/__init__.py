"""cosign-compatible image signatures: simple-signing payloads signed with
ECDSA P-256 keys, stored under the `sha256-<digest>.sig` tag."""
