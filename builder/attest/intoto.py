"""The in-toto statement every attestation layer is: a predicate about
subjects (each a name and the digest of what it names)."""

from __future__ import annotations

from typing import Mapping, Sequence

from builder.image import canonical_json

# BuildKit 0.13 writes v0.1 statements (measured with docker 26).
STATEMENT_TYPE = "https://in-toto.io/Statement/v0.1"


def statement(kind: str, predicate: Mapping, subject: Sequence[Mapping]) -> bytes:
    return canonical_json({"_type": STATEMENT_TYPE, "predicateType": kind, "subject": list(subject),
                           "predicate": predicate})
