"""`pybuild build --call outline|targets|check`: the Dockerfile frontend's
subrequests, answered without building, printed as buildx prints them
(text through Go's tabwriter, or `format=json` as Go marshals the
subrequest's result). Also the Dockerfile reading and the JSON pieces
(`location`, `sources`) `pybuild check --format json` shares."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from builder.cli import gojson
from builder.cli.guard import run_guarded

CALLS = ("build", "check", "outline", "targets")


def parse_call(value: str | None) -> tuple[str, str]:
    """`NAME[,format=text|json]` -> (name, format); "build" when unset."""
    if not value:
        return "build", "text"
    name, *options = [part.strip() for part in value.split(",")]
    if name not in CALLS:
        raise click.BadParameter(f"unknown method {name!r}, expected one of {', '.join(CALLS)}", param_hint="--call")
    fmt = "text"
    for option in options:
        key, _, setting = option.partition("=")
        if key != "format" or setting not in ("text", "json"):
            raise click.BadParameter(f"unexpected option {option!r} (format=text|json)", param_hint="--call")
        fmt = setting
    return name, fmt


def read_input(context: str, dockerfile: str | None) -> tuple[str, str, Path]:
    """The Dockerfile's text, the name messages give it, and its path."""
    from builder.context.dockerfile import read_dockerfile_at
    from frontend.parser import read_dockerfile

    from_stdin = dockerfile == "-"
    path = Path(context) / "Dockerfile" if from_stdin or not dockerfile else Path(dockerfile)
    shown = str(dockerfile) if dockerfile and not from_stdin else "Dockerfile"
    text = read_dockerfile(sys.stdin.buffer) if from_stdin else read_dockerfile_at(path)
    return text, shown, path


def location(loc, merged: bool = False) -> dict:
    """A pb.Location as BuildKit writes an instruction's: one range per
    line (a build error's are `merged` into one), line numbers only (source
    0 and column 0 are zero values, which Go leaves out)."""
    if loc is None:
        return {}
    spans = [(loc.start, loc.end)] if merged else [(line, line) for line in range(loc.start, loc.end + 1)]
    return {"ranges": [{"start": {"line": start}, "end": {"line": end}} for start, end in spans]}


def source_data(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tabulate(rows: list[list[str]], padding: int) -> str:
    """Go's text/tabwriter with these rows' cells tab-terminated but the
    last: each column as wide as its widest cell, plus `padding` spaces."""
    widths: dict[int, int] = {}
    for row in rows:
        for column, cell in enumerate(row[:-1]):
            widths[column] = max(widths.get(column, 0), len(cell))
    return "".join(
        "".join(cell.ljust(widths[column] + padding) for column, cell in enumerate(row[:-1])) + row[-1] + "\n"
        for row in rows
    )


def run_call(name: str, fmt: str, options: dict, debug: bool) -> None:
    """Answer `--call outline|targets` for the build's options."""
    from builder.build import parse_platform
    from frontend.check import no_image
    from frontend.outline import outline, targets

    text = None

    def action():
        nonlocal text
        text, shown, _ = read_input(options["context"], options["dockerfile"])
        if name == "targets":
            return targets(text, shown)
        platform = parse_platform((options.get("platform") or "").split(",")[0])
        return outline(text, shown, resolve_image=no_image, target=options.get("target"),
                       build_args=options.get("build_args") or {}, platform=platform)

    result = run_guarded(debug, action, lambda: text)
    if fmt == "json":
        body = _targets_json(result) if name == "targets" else _outline_json(result)
        click.echo(gojson.dumps({**body, "sources": [source_data(text or "")]}))
    else:
        click.echo(_targets_text(result) if name == "targets" else _outline_text(result), nl=False)


def _outline_json(found) -> dict:
    def item(entry, **fields):
        return {"name": entry.name, **{k: v for k, v in fields.items() if v}, "location": location(entry.location)}

    body = {"name": found.name, "description": found.description,
            "args": [item(a, description=a.description, value=a.value) for a in found.args],
            "secrets": [item(s, required=s.required) for s in found.secrets],
            "ssh": [item(s, required=s.required) for s in found.ssh]}  # fmt: skip
    return {key: value for key, value in body.items() if value}


def _outline_text(found) -> str:
    out = []
    if found.name or found.description:
        header = [["TARGET:", found.name or "(default)"]]
        header += [["DESCRIPTION:", found.description]] if found.description else []
        out.append(tabulate(header, 1) + "\n")
    if found.args:
        rows = [["BUILD ARG", "VALUE", "DESCRIPTION"]] + [[a.name, a.value, a.description] for a in found.args]
        out.append(tabulate(rows, 3) + "\n")
    for title, entries in (("SECRET", found.secrets), ("SSH", found.ssh)):
        if entries:
            rows = [[title, "REQUIRED"]] + [[s.name, "true" if s.required else ""] for s in entries]
            out.append(tabulate(rows, 3) + "\n")
    return "".join(out)


def _targets_json(found) -> dict:
    listed = []
    for target in found:
        fields = {"name": target.name, "default": target.default, "description": target.description,
                  "base": target.base, "platform": target.platform}  # fmt: skip
        listed.append({**{k: v for k, v in fields.items() if v}, "location": location(target.location)})
    return {"targets": listed}


def _targets_text(found) -> str:
    rows = [["TARGET", "DESCRIPTION"]]
    for target in found:
        name = target.name
        if target.default:
            name = f"{name} (default)" if name else "(default)"
        rows.append([name, target.description])
    return tabulate(rows, 1)
