"""Go durations: time.ParseDuration ("1m30s", "500ms" → nanoseconds) and
Duration.String (nanoseconds → "1m30s"), as HEALTHCHECK flags and image
configs spell them."""

from __future__ import annotations

import re

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
          "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}  # fmt: skip
_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_UNITLESS = re.compile(r"\d*\.?\d*$")
_MAX_NS = 2**63 - 1  # Go's Duration is an int64


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string such as "1m30s" or "500ms".
    Raises ValueError with Go's message ("time: invalid duration ...")."""
    orig = text
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match or match.group(1) in ("", "."):
            if match is None and _UNITLESS.match(text[pos:]):
                raise ValueError(f'time: missing unit in duration "{orig}"')
            raise ValueError(f'time: invalid duration "{orig}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if total > _MAX_NS:
        raise ValueError(f'time: invalid duration "{orig}"')
    return sign * int(round(total))


def format_duration(ns: int) -> str:
    """Go's Duration.String(): "0s", "1.5s", "500ms", "1h0m0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rem = divmod(ns, 3_600_000_000_000)
    minutes, rem = divmod(rem, 60_000_000_000)
    seconds = _fraction(rem, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _fraction(value: int, unit: int) -> str:
    """`value / unit` in decimal without trailing zeros, as Go prints it."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{str(frac).rjust(digits, '0').rstrip('0')}"
