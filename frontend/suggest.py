"""BuildKit's suggest package: the known word closest to a mistyped one,
for messages such as `unknown flag: chmodd (did you mean chmod?)`."""

from __future__ import annotations


def _levenshtein(a: str, b: str) -> int:
    # One row of the edit-distance table at a time.
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def closest(value: str, options) -> str:
    """BuildKit's suggest.Search: the first option closer than 3 edits, ""
    when there is none or the value is itself an option."""
    best, distance = "", 3
    for option in options:
        if option == value:
            return ""
        d = _levenshtein(value, option)
        if d < distance:
            best, distance = option, d
    return best


def with_suggestion(message: str, value: str, options) -> str:
    """BuildKit's suggest.WrapError."""
    best = closest(value, options)
    return f"{message} (did you mean {best}?)" if best else message
