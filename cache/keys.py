"""Layer stack identities the store and the runtime share.

(Step cache keys are the solver's: builder/solver/keys.py.)
"""

from __future__ import annotations

import hashlib
from typing import Sequence


def chain_id(diff_ids: Sequence[str]) -> str:
    """The OCI chain ID of a layer stack: ChainID(L0) = DiffID(L0),
    ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    current = None
    for diff_id in diff_ids:
        if current is None:
            current = diff_id
        else:
            current = "sha256:" + hashlib.sha256(f"{current} {diff_id}".encode()).hexdigest()
    if current is None:
        raise ValueError("chain_id of an empty layer stack")
    return current
