"""The rootless tests: `rootless` and `nosubid` (tests/conftest.py) run the
real `pybuild` as an ordinary user (tests/fixtures/rootless.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # rootless_helpers
