"""Comparing a pybuild record with docker 26's (live or recorded), as a
dict of readable differences keyed by what differs: empty when they agree.

The keys are what case.json's known_differences names: a path ("/etc"),
"config KEY", "history", "rebuild N", or for an error "outcome", "exit",
"traceback", "error key", "line"."""

from __future__ import annotations

import json

from compat.cases import Case


def _show(value) -> str:
    return json.dumps(value, sort_keys=True)


def differences(case: Case, want: dict, got: dict) -> dict[str, str]:
    """What pybuild's record `got` does differently from docker's `want`."""
    if "error" in want:
        return _error_differences(case, want["error"], got)
    if "error" in got:
        return {"outcome": f"docker built the image; pybuild failed: {got['error']['message'][-1500:]}"}
    found = _image_differences(want["image"], got["image"])
    for number, (theirs, ours) in enumerate(zip(want.get("rebuilds", []), got.get("rebuilds", [])), 1):
        if theirs["ran"] != ours["ran"]:
            found[f"rebuild {number}"] = f"ran: docker {_show(theirs['ran'])}, pybuild {_show(ours['ran'])}"
    return found


def _error_differences(case: Case, want: dict, got: dict) -> dict[str, str]:
    if "error" not in got:
        return {"outcome": f"docker failed ({want['message']}); pybuild built the image"}
    found = {}
    error = got["error"]
    if got.get("exit") != 1:
        found["exit"] = f"pybuild exited {got.get('exit')}, not 1"
    if got.get("traceback"):
        found["traceback"] = "pybuild printed a traceback"
    key = case.error_key or ""
    if key not in error["message"]:
        found["error key"] = (f"pybuild's message lacks {key!r} (docker: {want['message']}): "
                              f"{error['message'][-1500:]}")
    if want.get("line") is not None and error.get("line") != want["line"]:
        found["line"] = f"docker names Dockerfile:{want['line']}, pybuild {error.get('line')}"
    return found


def _image_differences(want: dict, got: dict) -> dict[str, str]:
    found = {}
    for key in sorted(set(want["config"]) | set(got["config"])):
        if want["config"].get(key) != got["config"].get(key):
            found[f"config {key}"] = (f"docker {_show(want['config'].get(key))}, "
                                      f"pybuild {_show(got['config'].get(key))}")
    if want["history"] != got["history"]:
        found["history"] = ("\n  docker  " + "\n          ".join(map(_show, want["history"]))
                            + "\n  pybuild " + "\n          ".join(map(_show, got["history"])))
    for path in sorted(set(want["files"]) | set(got["files"])):
        theirs, ours = want["files"].get(path), got["files"].get(path)
        if theirs == ours:
            continue
        if theirs is None:
            found[path] = f"only pybuild has it: {_show(ours)}"
        elif ours is None:
            found[path] = f"pybuild lacks it: {_show(theirs)}"
        else:
            found[path] = ", ".join(f"{name} docker {_show(theirs.get(name))} pybuild {_show(ours.get(name))}"
                                    for name in sorted(set(theirs) | set(ours)) if theirs.get(name) != ours.get(name))
    return found


def stale(case: Case, recorded: dict, live: dict) -> dict[str, str]:
    """How docker 26's live record differs from the case's expected.json:
    a case edited since it was recorded, or a recording that depended on
    what the daemon had built before. Of an error, the line and the
    error key count: the rest of docker's wording varies with the path
    the error took (e.g. "failed to solve:" or "failed to run Build
    function:" before one same message)."""
    recorded = {key: value for key, value in recorded.items() if key != "recorded_with"}
    if ("error" in recorded) != ("error" in live):
        return {"outcome": f"recorded {_show(recorded)[:1500]}, live {_show(live)[:1500]}"}
    if "error" in live:
        found = {}
        if recorded["error"].get("line") != live["error"].get("line"):
            found["line"] = f"recorded {recorded['error'].get('line')}, live {live['error'].get('line')}"
        if (case.error_key or "") not in live["error"]["message"]:
            found["error key"] = f"{case.error_key!r} not in docker's message now: {live['error']['message']}"
        return found
    found = _image_differences(recorded["image"], live["image"])
    if recorded.get("rebuilds") != live.get("rebuilds"):
        found["rebuilds"] = f"recorded {_show(recorded.get('rebuilds'))}, live {_show(live.get('rebuilds'))}"
    return found


def report(case: Case, against: str, found: dict[str, str]) -> str:
    return f"{case.name}: pybuild differs from {against}:\n" + "\n".join(
        f"- {key}: {text}" for key, text in found.items())


def unexplained(case: Case, against: str, found: dict[str, str]) -> str:
    """Why the differences `found` fail the case ("" when they do not):
    one its known_differences does not name, or a known one gone (the fix
    then drops it from case.json)."""
    known = case.known_differences
    unknown = {key: text for key, text in found.items() if key not in known}
    if unknown:
        return report(case, against, unknown)
    fixed = sorted(set(known) - set(found))
    return f"{case.name}: known differences gone, drop them from case.json: {fixed}" if fixed else ""
