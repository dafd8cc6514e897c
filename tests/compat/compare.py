"""Comparing a pybuild record with docker 26's (live or recorded), as a
list of readable differences: empty when they agree."""

from __future__ import annotations

import json

from compat.cases import Case


def _show(value) -> str:
    return json.dumps(value, sort_keys=True)


def differences(case: Case, want: dict, got: dict) -> list[str]:
    """What pybuild's record `got` does differently from docker's `want`."""
    if "error" in want:
        return _error_differences(case, want["error"], got)
    if "error" in got:
        return [f"docker built the image; pybuild failed: {got['error']['message'][-1500:]}"]
    return _image_differences(want["image"], got["image"])


def _error_differences(case: Case, want: dict, got: dict) -> list[str]:
    if "error" not in got:
        return [f"docker failed ({want['message']}); pybuild built the image"]
    found = []
    error = got["error"]
    if got.get("exit") != 1:
        found.append(f"pybuild exited {got.get('exit')}, not 1")
    if got.get("traceback"):
        found.append("pybuild printed a traceback")
    key = case.error_key or ""
    if key not in error["message"]:
        found.append(f"pybuild's message lacks the error key {key!r}: {error['message'][-1500:]}")
    if want.get("line") is not None and error.get("line") != want["line"]:
        found.append(f"docker names Dockerfile:{want['line']}, pybuild {error.get('line')}")
    return found


def _image_differences(want: dict, got: dict) -> list[str]:
    found = []
    for key in sorted(set(want["config"]) | set(got["config"])):
        if want["config"].get(key) != got["config"].get(key):
            found.append(f"config {key}: docker {_show(want['config'].get(key))}, "
                         f"pybuild {_show(got['config'].get(key))}")
    if want["history"] != got["history"]:
        found.append("history:\n  docker  " + "\n          ".join(map(_show, want["history"]))
                     + "\n  pybuild " + "\n          ".join(map(_show, got["history"])))
    for path in sorted(set(want["files"]) | set(got["files"])):
        theirs, ours = want["files"].get(path), got["files"].get(path)
        if theirs == ours:
            continue
        if theirs is None:
            found.append(f"{path}: only pybuild has it: {_show(ours)}")
        elif ours is None:
            found.append(f"{path}: pybuild lacks it: {_show(theirs)}")
        else:
            fields = sorted(set(theirs) | set(ours))
            found.append(f"{path}: " + ", ".join(f"{name} docker {_show(theirs.get(name))} pybuild "
                                                 f"{_show(ours.get(name))}"
                                                 for name in fields if theirs.get(name) != ours.get(name)))
    return found


def report(case: Case, against: str, found: list[str]) -> str:
    return f"{case.name}: pybuild differs from {against}:\n" + "\n".join(f"- {line}" for line in found)
