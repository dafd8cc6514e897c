"""What the issue-15 refactor must not change, found by running the code of
330ea95 (before it) and of the refactored tree side by side with the same
inputs. Each test asserts what 330ea95 did."""

from __future__ import annotations

import pytest

from builder.build import build
from builder.errors import PybuildError


def test_build_still_takes_the_context_as_a_keyword(tmp_path):
    # 330ea95: build(context, *, ...) took `context=` like any other keyword.
    # The refactor made it positional-only, so the call below failed with
    # TypeError ("missing 1 required positional argument: 'request'") before
    # anything was looked at, where the context it names was checked.
    missing = tmp_path / "no-such-context"
    with pytest.raises(PybuildError, match="is not a directory"):
        build(context=str(missing), root=str(tmp_path / "root"))
