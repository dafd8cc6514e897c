"""A small part of the SPDX license list: the identifiers package
databases commonly declare (Debian, Alpine, PyPI and npm metadata), so
that an SBOM names a license only in words SPDX knows. A declared license
outside this list is NOASSERTION, never an identifier SPDX tools refuse;
tests/attest/test_spdx_licenses.py checks every entry against the full
list that spdx-tools carries."""

from __future__ import annotations

_LICENSES = """
0BSD AFL-2.1 AFL-3.0 AGPL-3.0 AGPL-3.0-only AGPL-3.0-or-later Apache-1.0 Apache-1.1 Apache-2.0 APSL-2.0
Artistic-1.0 Artistic-1.0-Perl Artistic-2.0 Beerware BlueOak-1.0.0 BSD-1-Clause BSD-2-Clause
BSD-2-Clause-Patent BSD-3-Clause BSD-3-Clause-Clear BSD-4-Clause BSL-1.0 bzip2-1.0.6 CC-BY-3.0 CC-BY-4.0
CC-BY-SA-3.0 CC-BY-SA-4.0 CC0-1.0 CDDL-1.0 CDDL-1.1 CECILL-2.1 CPL-1.0 curl ECL-2.0 EPL-1.0 EPL-2.0
EUPL-1.1 EUPL-1.2 FSFAP FSFUL FSFULLR FTL GFDL-1.2 GFDL-1.2-only GFDL-1.2-or-later GFDL-1.3
GFDL-1.3-only GFDL-1.3-or-later GPL-1.0 GPL-1.0-only GPL-1.0-or-later GPL-2.0 GPL-2.0-only
GPL-2.0-or-later GPL-3.0 GPL-3.0-only GPL-3.0-or-later HPND IJG ICU Info-ZIP ISC LGPL-2.0 LGPL-2.0-only
LGPL-2.0-or-later LGPL-2.1 LGPL-2.1-only LGPL-2.1-or-later LGPL-3.0 LGPL-3.0-only LGPL-3.0-or-later
Libpng libpng-2.0 LPPL-1.3c MIT MIT-0 MIT-CMU MPL-1.1 MPL-2.0 MS-PL
NCSA OFL-1.1 OLDAP-2.8 OpenSSL OSL-3.0 PHP-3.01 PostgreSQL PSF-2.0 Python-2.0 Ruby SGI-B-2.0
Sleepycat SSPL-1.0 TCL Unicode-DFS-2016 Unlicense UPL-1.0 Vim W3C WTFPL X11 XFree86-1.1 Zlib ZPL-2.1
"""
_EXCEPTIONS = """
Autoconf-exception-2.0 Autoconf-exception-3.0 Bison-exception-2.2 Classpath-exception-2.0
GCC-exception-2.0 GCC-exception-3.1 LLVM-exception Qt-LGPL-exception-1.1
"""

# SPDX matches identifiers case-insensitively; documents spell them as listed.
_BY_FOLDED = {word.lower(): word for word in _LICENSES.split()}
_EXCEPTIONS_BY_FOLDED = {word.lower(): word for word in _EXCEPTIONS.split()}


def spdx_license(word: str) -> str | None:
    """The listed spelling of license identifier `word` (with SPDX's `+`,
    "or later", kept), or None when the list does not have it."""
    base, plus = (word[:-1], "+") if word.endswith("+") else (word, "")
    known = _BY_FOLDED.get(base.lower())
    return known + plus if known else None


def spdx_exception(word: str) -> str | None:
    """The listed spelling of license exception `word`, or None."""
    return _EXCEPTIONS_BY_FOLDED.get(word.lower())


def listed() -> tuple[list[str], list[str]]:
    """Every license and exception identifier here (for tests)."""
    return sorted(_BY_FOLDED.values()), sorted(_EXCEPTIONS_BY_FOLDED.values())
