"""`--provenance`, `--sbom` and `--attest`, read as buildx reads them.

buildx turns `--provenance=VALUE` into `--attest=type=provenance,VALUE`
(a bare boolean becoming `disabled=!VALUE`) and the same for `--sbom`; each
type may be given once. With no provenance flag, a build gets min-mode
provenance unless BUILDX_NO_DEFAULT_ATTESTATIONS is a true boolean.

Measured with docker 26 (buildx 0.13, BuildKit 0.13): `--provenance=true`
asks for no mode, and BuildKit's default mode is max; only the default
attestation buildx adds by itself is min. `mode=full` is BuildKit's old
name of max. An unknown option, which BuildKit ignores, is refused here:
pybuild reads every one it takes, and a typo would silently change nothing.
"""

from __future__ import annotations

import csv
import enum
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

from builder.errors import PybuildError

NO_DEFAULT_ENV = "BUILDX_NO_DEFAULT_ATTESTATIONS"
# Go's strconv.ParseBool, which buildx and BuildKit use for every boolean.
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class AttestError(PybuildError):
    """An attestation flag that cannot be read."""


class ProvenanceMode(str, enum.Enum):
    MIN = "min"
    MAX = "max"


class SlsaVersion(str, enum.Enum):
    V0_2 = "v0.2"
    V1 = "v1"


@dataclass(frozen=True)
class ProvenanceOptions:
    mode: ProvenanceMode = ProvenanceMode.MAX
    version: SlsaVersion = SlsaVersion.V0_2
    builder_id: str = ""
    reproducible: bool = False
    # For exporters that cannot hold an attestation beside the image (local,
    # tar): BuildKit then writes nothing unless this is false.
    inline_only: bool = False
    filename: str = "provenance.json"


@dataclass(frozen=True)
class SbomOptions:
    generator: str = ""  # the scanner image; "" = the builder's own
    scan_context: bool = False
    scan_stage: bool = False


@dataclass(frozen=True)
class AttestOptions:
    """What attestations a build makes; None where a type is off."""

    provenance: ProvenanceOptions | None = None
    sbom: SbomOptions | None = None

    @property
    def any(self) -> bool:
        return self.provenance is not None or self.sbom is not None


# buildx's own default: min, and only where it can sit beside an image.
DEFAULT_PROVENANCE = ProvenanceOptions(mode=ProvenanceMode.MIN, inline_only=True)
DEFAULT_SPEC = "type=provenance,mode=min,inline-only=true"


def parse_bool(value: str, what: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise AttestError(f"invalid value {what}")


def parse_attest_flags(*, provenance: str | None = None, sbom: str | None = None, attest: Sequence[str] = (),
                       environ: Mapping[str, str] | None = None) -> AttestOptions:
    """The build's attestations from its flags; `environ` (default: this
    process's) is read for BUILDX_NO_DEFAULT_ATTESTATIONS only."""
    given: dict[str, tuple[bool, dict[str, str]]] = {}
    entries = list(attest)
    if provenance:
        entries.append(_shorthand("provenance", provenance))
    if sbom:
        entries.append(_shorthand("sbom", sbom))
    for entry in entries:
        kind, disabled, attrs = _parse_entry(entry)
        if kind in given:
            raise AttestError(f"duplicate attestation field {kind}")
        given[kind] = (disabled, attrs)
    options = AttestOptions()
    if "provenance" in given:
        disabled, attrs = given.pop("provenance")
        options = AttestOptions(provenance=None if disabled else _provenance(attrs))
    elif not _no_default(os.environ if environ is None else environ):
        options = AttestOptions(provenance=DEFAULT_PROVENANCE)
    if "sbom" in given:
        disabled, attrs = given.pop("sbom")
        options = AttestOptions(provenance=options.provenance, sbom=None if disabled else _sbom(attrs))
    for kind in given:
        raise AttestError(f'unknown attestation type "{kind}"')
    return options


def cli_attest_specs(*, provenance: str | None = None, sbom: str | None = None, attest: Sequence[str] = (),
                     environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The --attest specs buildx sends BuildKit for these flags (checked):
    the shorthands spelled out, plus its default min provenance unless a
    provenance flag or BUILDX_NO_DEFAULT_ATTESTATIONS says otherwise."""
    parse_attest_flags(provenance=provenance, sbom=sbom, attest=attest, environ=environ)
    specs = list(attest)
    if provenance:
        specs.append(_shorthand("provenance", provenance))
    if sbom:
        specs.append(_shorthand("sbom", sbom))
    environ = os.environ if environ is None else environ
    if not any(_parse_entry(spec)[0] == "provenance" for spec in specs) and not _no_default(environ):
        specs.append(DEFAULT_SPEC)
    return tuple(specs)


def parse_attest_specs(specs: Sequence[str]) -> AttestOptions:
    """BuildKit's side: the attestations `specs` ask for, and none besides
    (the default is the client's to add, cli_attest_specs)."""
    return parse_attest_flags(attest=specs, environ={NO_DEFAULT_ENV: "true"})


def is_default(options: ProvenanceOptions | None) -> bool:
    """buildx's own default: BuildKit cannot tell it from the same request
    spelled out, and neither does pybuild."""
    return options == DEFAULT_PROVENANCE


def _shorthand(kind: str, value: str) -> str:
    if value in _TRUE or value in _FALSE:
        return f"type={kind},disabled={'false' if value in _TRUE else 'true'}"
    return f"type={kind},{value}"


def _parse_entry(text: str) -> tuple[str, bool, dict[str, str]]:
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as exc:
        raise AttestError(f"invalid attestation {text!r}: {exc}") from None
    kind, disabled, attrs = "", False, {}
    for field in fields:
        key, sep, value = field.partition("=")
        if not sep:
            raise AttestError(f"invalid value {field}")
        key = key.strip().lower()
        if key == "type":
            kind = value
        elif key == "disabled":
            disabled = parse_bool(value, field)
        else:
            attrs[key] = value
    if not kind:
        raise AttestError("attestation type not specified")
    return kind, disabled, attrs


def _provenance(attrs: dict[str, str]) -> ProvenanceOptions:
    known = {"mode", "version", "builder-id", "reproducible", "inline-only", "filename"}
    _refuse_unknown("provenance", attrs, known)
    mode = attrs.get("mode", "max")
    if mode == "full":
        mode = "max"
    if mode not in ("min", "max"):
        raise AttestError(f'invalid provenance mode "{mode}": expected min or max')
    version = attrs.get("version", "v0.2")
    if version not in ("v0.2", "v1"):
        raise AttestError(f"invalid provenance SLSA version: {version} (expected v0.2 or v1)")
    return ProvenanceOptions(
        mode=ProvenanceMode(mode),
        version=SlsaVersion(version),
        builder_id=attrs.get("builder-id", ""),
        reproducible=_flag(attrs, "reproducible"),
        inline_only=_flag(attrs, "inline-only"),
        filename=attrs.get("filename") or "provenance.json",
    )


def _sbom(attrs: dict[str, str]) -> SbomOptions:
    _refuse_unknown("sbom", attrs, {"generator", "scan-context", "scan-stage"})
    return SbomOptions(generator=attrs.get("generator", ""), scan_context=_flag(attrs, "scan-context"),
                       scan_stage=_flag(attrs, "scan-stage"))


def _flag(attrs: Mapping[str, str], key: str) -> bool:
    return key in attrs and parse_bool(attrs[key], f"{key}={attrs[key]}")


def _refuse_unknown(kind: str, attrs: Mapping[str, str], known: set[str]) -> None:
    for key in attrs:
        if key not in known:
            raise AttestError(f"unknown {kind} option {key!r}: expected one of {', '.join(sorted(known))}")


def _no_default(environ: Mapping[str, str]) -> bool:
    value = environ.get(NO_DEFAULT_ENV)
    # buildx ignores a value ParseBool cannot read, as if unset.
    return value is not None and value in _TRUE
