"""Fixtures of the SBOM tests: the Debian 12 base (mmdebstrap, in the
session's registry) that the end-to-end scan builds on."""

from __future__ import annotations

import pytest

from fixtures import debian_base
from fixtures.tools import require_tools


@pytest.fixture(scope="session")
def sbom_debian_base(registry, tmp_path_factory) -> str:
    """A Debian 12 minbase image in the session registry (its reference)."""
    require_tools("mmdebstrap", "skopeo")
    ref = f"{registry.host}/sbom-debian:bookworm"
    debian_base.push_debian_base(tmp_path_factory.mktemp("sbom-debian-layout"), ref)
    return ref
