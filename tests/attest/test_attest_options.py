"""--provenance, --sbom and --attest read as buildx 0.13 reads them (what
docker 26's buildx answered is noted beside each case)."""

from __future__ import annotations

import pytest

from builder.attest.options import (DEFAULT_PROVENANCE, AttestError, AttestOptions, ProvenanceMode,
                                    ProvenanceOptions, SbomOptions, SlsaVersion, parse_attest_flags)

NO_ENV: dict[str, str] = {}


def test_a_build_without_flags_gets_min_provenance_for_images_only():
    assert parse_attest_flags(environ=NO_ENV) == AttestOptions(provenance=DEFAULT_PROVENANCE)
    assert DEFAULT_PROVENANCE.mode is ProvenanceMode.MIN and DEFAULT_PROVENANCE.inline_only


@pytest.mark.parametrize("value", ["1", "true", "True", "t"])
def test_buildx_no_default_attestations_turns_the_default_off(value):
    assert parse_attest_flags(environ={"BUILDX_NO_DEFAULT_ATTESTATIONS": value}) == AttestOptions()


@pytest.mark.parametrize("value", ["0", "false", "", "maybe"])
def test_a_false_or_unreadable_no_default_keeps_the_default(value):
    assert parse_attest_flags(environ={"BUILDX_NO_DEFAULT_ATTESTATIONS": value}).provenance == DEFAULT_PROVENANCE


def test_an_explicit_provenance_wins_over_no_default():
    found = parse_attest_flags(provenance="mode=min", environ={"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"})
    assert found.provenance == ProvenanceOptions(mode=ProvenanceMode.MIN)


def test_provenance_true_is_max_as_buildkit_defaults_it():
    # docker 26: --provenance=true gave buildConfig and the build args.
    assert parse_attest_flags(provenance="true", environ=NO_ENV).provenance == ProvenanceOptions()
    assert ProvenanceOptions().mode is ProvenanceMode.MAX


@pytest.mark.parametrize("value", ["false", "0", "F"])
def test_provenance_false_disables_it(value):
    assert parse_attest_flags(provenance=value, environ=NO_ENV) == AttestOptions()


def test_every_provenance_option():
    found = parse_attest_flags(
        attest=['type=provenance,mode=max,version=v1,builder-id=https://ci.example/run/7,reproducible=true,'
                'inline-only=1,filename=prov.json'], environ=NO_ENV).provenance
    assert found == ProvenanceOptions(mode=ProvenanceMode.MAX, version=SlsaVersion.V1,
                                      builder_id="https://ci.example/run/7", reproducible=True, inline_only=True,
                                      filename="prov.json")


def test_mode_full_is_max():
    assert parse_attest_flags(provenance="mode=full", environ=NO_ENV).provenance.mode is ProvenanceMode.MAX


def test_the_attest_form_equals_the_shorthand():
    assert parse_attest_flags(attest=["type=provenance,mode=max"], environ=NO_ENV) == \
        parse_attest_flags(provenance="mode=max", environ=NO_ENV)
    assert parse_attest_flags(attest=["type=sbom"], environ=NO_ENV) == \
        parse_attest_flags(sbom="true", environ=NO_ENV)


def test_sbom_on_with_its_options_and_the_default_provenance_beside_it():
    found = parse_attest_flags(sbom="generator=scanner:1,scan-stage=true", environ=NO_ENV)
    assert found == AttestOptions(provenance=DEFAULT_PROVENANCE,
                                  sbom=SbomOptions(generator="scanner:1", scan_stage=True))
    assert parse_attest_flags(sbom="false", environ=NO_ENV).sbom is None


def test_disabled_in_the_attest_form():
    assert parse_attest_flags(attest=["type=provenance,disabled=true"], environ=NO_ENV) == AttestOptions()


def test_a_quoted_value_holds_a_comma():
    found = parse_attest_flags(attest=['type=provenance,"builder-id=a,b"'], environ=NO_ENV)
    assert found.provenance.builder_id == "a,b"


@pytest.mark.parametrize("kwargs, message", [
    # the first four are docker 26's buildx's own words
    ({"provenance": "mode=max", "attest": ["type=provenance,mode=min"]}, "duplicate attestation field provenance"),
    ({"attest": ["mode=min"]}, "attestation type not specified"),
    ({"attest": ["type=foo"]}, 'unknown attestation type "foo"'),
    ({"provenance": "maybe"}, "invalid value maybe"),
    ({"provenance": "mode=bogus"}, 'invalid provenance mode "bogus": expected min or max'),
    ({"provenance": "version=v9"}, "invalid provenance SLSA version: v9 (expected v0.2 or v1)"),
    ({"provenance": "reproducible=sure"}, "invalid value reproducible=sure"),
    ({"provenance": "mode=min,foo=bar"}, "unknown provenance option 'foo'"),
    ({"sbom": "scan=yes"}, "unknown sbom option 'scan'"),
    ({"attest": ["type=sbom,disabled=perhaps"]}, "invalid value disabled=perhaps"),
])
def test_bad_flags_are_one_line_errors(kwargs, message):
    with pytest.raises(AttestError) as raised:
        parse_attest_flags(environ=NO_ENV, **kwargs)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
