"""Arbitrary input never escapes as anything but DockerfileError."""

from __future__ import annotations

from golden import FakeResolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontend import DockerfileError, convert, parse
from frontend.instruction_parsing import parse_stages

KEYWORDS = ["FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "LABEL", "CMD", "ENTRYPOINT", "WORKDIR",
            "USER", "EXPOSE", "VOLUME", "SHELL", "ONBUILD", "HEALTHCHECK", "STOPSIGNAL",
            "MAINTAINER", "from", "run", "FROMM"]  # fmt: skip
FRAGMENTS = ["busybox", "scratch", "AS", "a", "--from=a", "--mount=type=cache,target=/x", "$A", "${A:-b}",
             "${", "}", '"', "'", "\\", "\n", " ", "<<EOF", "\nEOF", "<<-'X'", "[", "]", '["a"]', "=", "#",
             "# escape=`", "--platform=$BUILDPLATFORM", "CMD", "x=y", "/", "80/tcp", "\t", "`"]  # fmt: skip

LINE = st.builds(
    lambda kw, parts: kw + " " + "".join(parts),
    st.sampled_from(KEYWORDS),
    st.lists(st.sampled_from(FRAGMENTS), max_size=8),
)
DOCKERFILE = st.one_of(
    st.lists(LINE, min_size=1, max_size=8).map(lambda lines: "FROM busybox\n" + "\n".join(lines) + "\n"),
    st.lists(LINE, min_size=1, max_size=8).map("\n".join),
    st.text(max_size=300),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(DOCKERFILE)
def test_parse_and_convert_only_raise_dockerfile_error(text):
    try:
        parse_stages(parse(text))
    except DockerfileError:
        pass
    try:
        convert(text, resolve_image=FakeResolver(), build_args={"A": "1"})
    except DockerfileError as err:
        assert err.message
