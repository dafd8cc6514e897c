"""`pybuild build --call outline|targets|check`: the frontend's subrequests,
answered without building, compared with what buildx prints.

The expected strings were captured from docker 26.1.5 (BuildKit v0.13.1)
with buildx 0.13.1 on this machine (BUILDX_EXPERIMENTAL=1 docker buildx
build --print=outline|targets[,format=json] [--target deps --build-arg
VERSION=2.0 --build-arg SID=pip] .) over DOCKERFILE below, on 2026-12-07;
only the base64 of the Dockerfile in `sources` is written @SOURCES@ here.
"""

import base64
import json

import pytest
from click.testing import CliRunner

from builder.cli import main

DOCKERFILE = """\
# REG the <registry> & mirror
ARG REG=127.0.0.1:5099
ARG IMG=${REG}/busybox
# VERSION the version to install
ARG VERSION=1.2 UNUSED=z

# base prepares the base
FROM $IMG AS base
# DEBUG turns on debug output
ARG DEBUG=0
ARG VERSION
ENV HOME_DIR=/home
ARG WHERE=${HOME_DIR}/x
RUN --mount=type=secret,id=token --mount=type=ssh echo $VERSION $DEBUG

# deps fetches the dependencies
FROM base AS Deps
# wrong comment for arg
ARG TARGETOS
ARG SID=npm
RUN --mount=type=secret,id=${SID}rc,required=true --mount=type=ssh,id=gitlab,required echo $TARGETOS
RUN --mount=type=secret,id=token,required echo again

FROM ${IMG} AS tools
ARG TOOL=make
RUN --mount=type=cache,target=/c --mount=type=secret,target=/run/secrets/gh_token true

# final    the image we ship
FROM --platform=linux/arm64 base AS final
COPY --from=deps /etc/passwd /x
RUN --mount=from=tools,target=/t true
ARG LAST=last
"""

# docker buildx build --print=outline .
OUTLINE = (
    "TARGET:      final\n"
    "DESCRIPTION:    the image we ship\n"
    "\n"
    "BUILD ARG   VALUE                    DESCRIPTION\n"
    "REG         127.0.0.1:5099           the <registry> & mirror\n"
    "IMG         127.0.0.1:5099/busybox   \n"
    "VERSION     1.2                      the version to install\n"
    "DEBUG       0                        turns on debug output\n"
    "WHERE       /home/x                  \n"
    "SID         npm                      \n"
    "TOOL        make                     \n"
    "LAST        last                     \n"
    "\n"
    "SECRET     REQUIRED\n"
    "token      \n"
    "npmrc      true\n"
    "gh_token   \n"
    "\n"
    "SSH       REQUIRED\n"
    "default   \n"
    "gitlab    true\n"
    "\n"
)
# docker buildx build --print=outline --target deps --build-arg VERSION=2.0 --build-arg SID=pip .
OUTLINE_DEPS = (
    "TARGET:      deps\n"
    "DESCRIPTION: fetches the dependencies\n"
    "\n"
    "BUILD ARG   VALUE                    DESCRIPTION\n"
    "REG         127.0.0.1:5099           the <registry> & mirror\n"
    "IMG         127.0.0.1:5099/busybox   \n"
    "DEBUG       0                        turns on debug output\n"
    "VERSION     2.0                      \n"
    "WHERE       /home/x                  \n"
    "SID         pip                      \n"
    "\n"
    "SECRET   REQUIRED\n"
    "piprc    true\n"
    "token    true\n"
    "\n"
    "SSH       REQUIRED\n"
    "default   \n"
    "gitlab    true\n"
    "\n"
)
# docker buildx build --print=targets .
TARGETS = (
    "TARGET          DESCRIPTION\n"
    "base            prepares the base\n"
    "deps            fetches the dependencies\n"
    "tools           \n"
    "final (default)    the image we ship\n"
)
# docker buildx build --print=outline,format=json .
OUTLINE_JSON = '''\
{
  "name": "final",
  "description": "   the image we ship",
  "args": [
    {
      "name": "REG",
      "description": "the \\u003cregistry\\u003e \\u0026 mirror",
      "value": "127.0.0.1:5099",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 2
            },
            "end": {
              "line": 2
            }
          }
        ]
      }
    },
    {
      "name": "IMG",
      "value": "127.0.0.1:5099/busybox",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 3
            },
            "end": {
              "line": 3
            }
          }
        ]
      }
    },
    {
      "name": "VERSION",
      "description": "the version to install",
      "value": "1.2",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 5
            },
            "end": {
              "line": 5
            }
          }
        ]
      }
    },
    {
      "name": "DEBUG",
      "description": "turns on debug output",
      "value": "0",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 10
            },
            "end": {
              "line": 10
            }
          }
        ]
      }
    },
    {
      "name": "WHERE",
      "value": "/home/x",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 13
            },
            "end": {
              "line": 13
            }
          }
        ]
      }
    },
    {
      "name": "SID",
      "value": "npm",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 20
            },
            "end": {
              "line": 20
            }
          }
        ]
      }
    },
    {
      "name": "TOOL",
      "value": "make",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 25
            },
            "end": {
              "line": 25
            }
          }
        ]
      }
    },
    {
      "name": "LAST",
      "value": "last",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 32
            },
            "end": {
              "line": 32
            }
          }
        ]
      }
    }
  ],
  "secrets": [
    {
      "name": "token",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 14
            },
            "end": {
              "line": 14
            }
          }
        ]
      }
    },
    {
      "name": "npmrc",
      "required": true,
      "location": {
        "ranges": [
          {
            "start": {
              "line": 21
            },
            "end": {
              "line": 21
            }
          }
        ]
      }
    },
    {
      "name": "gh_token",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 26
            },
            "end": {
              "line": 26
            }
          }
        ]
      }
    }
  ],
  "ssh": [
    {
      "name": "default",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 14
            },
            "end": {
              "line": 14
            }
          }
        ]
      }
    },
    {
      "name": "gitlab",
      "required": true,
      "location": {
        "ranges": [
          {
            "start": {
              "line": 21
            },
            "end": {
              "line": 21
            }
          }
        ]
      }
    }
  ],
  "sources": [
    "@SOURCES@"
  ]
}
'''
# docker buildx build --print=targets,format=json .
TARGETS_JSON = '''\
{
  "targets": [
    {
      "name": "base",
      "description": "prepares the base",
      "base": "$IMG",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 8
            },
            "end": {
              "line": 8
            }
          }
        ]
      }
    },
    {
      "name": "deps",
      "description": "fetches the dependencies",
      "base": "base",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 17
            },
            "end": {
              "line": 17
            }
          }
        ]
      }
    },
    {
      "name": "tools",
      "base": "${IMG}",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 24
            },
            "end": {
              "line": 24
            }
          }
        ]
      }
    },
    {
      "name": "final",
      "default": true,
      "description": "   the image we ship",
      "base": "base",
      "platform": "linux/arm64",
      "location": {
        "ranges": [
          {
            "start": {
              "line": 29
            },
            "end": {
              "line": 29
            }
          }
        ]
      }
    }
  ],
  "sources": [
    "@SOURCES@"
  ]
}
'''
# docker buildx build --print=outline,format=json --target deps --build-arg VERSION=2.0 --build-arg SID=pip .,
# without `sources`
OUTLINE_DEPS_JSON = '{"name":"deps","description":"fetches the dependencies","args":[{"name":"REG","description":"the <registry> & mirror","value":"127.0.0.1:5099","location":{"ranges":[{"start":{"line":2},"end":{"line":2}}]}},{"name":"IMG","value":"127.0.0.1:5099/busybox","location":{"ranges":[{"start":{"line":3},"end":{"line":3}}]}},{"name":"DEBUG","description":"turns on debug output","value":"0","location":{"ranges":[{"start":{"line":10},"end":{"line":10}}]}},{"name":"VERSION","value":"2.0","location":{"ranges":[{"start":{"line":11},"end":{"line":11}}]}},{"name":"WHERE","value":"/home/x","location":{"ranges":[{"start":{"line":13},"end":{"line":13}}]}},{"name":"SID","value":"pip","location":{"ranges":[{"start":{"line":20},"end":{"line":20}}]}}],"secrets":[{"name":"piprc","required":true,"location":{"ranges":[{"start":{"line":21},"end":{"line":21}}]}},{"name":"token","required":true,"location":{"ranges":[{"start":{"line":22},"end":{"line":22}}]}}],"ssh":[{"name":"default","location":{"ranges":[{"start":{"line":14},"end":{"line":14}}]}},{"name":"gitlab","required":true,"location":{"ranges":[{"start":{"line":21},"end":{"line":21}}]}}]}'


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def context(tmp_path):
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    return str(tmp_path)


def sources(text: str) -> str:
    return text.replace("@SOURCES@", base64.b64encode(DOCKERFILE.encode()).decode())


@pytest.mark.parametrize("call, expected", [
    ("outline", OUTLINE),
    ("outline,format=json", sources(OUTLINE_JSON)),
    ("targets", TARGETS),
    ("targets,format=json", sources(TARGETS_JSON)),
])  # fmt: skip
def test_call_prints_what_buildx_prints(context, call, expected):
    result = run("build", "--call", call, context)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_call_outline_with_target_and_build_args(context):
    args = ["--target", "deps", "--build-arg", "VERSION=2.0", "--build-arg", "SID=pip", context]
    text = run("build", "--call", "outline", *args)
    assert text.exit_code == 0, text.output
    assert text.stdout == OUTLINE_DEPS
    found = json.loads(run("build", "--call", "outline,format=json", *args).stdout)
    assert found.pop("sources") == [base64.b64encode(DOCKERFILE.encode()).decode()]
    assert json.dumps(found, separators=(",", ":")) == OUTLINE_DEPS_JSON  # the keys in buildx's order too


def test_call_builds_nothing_and_reads_no_registry(tmp_path, context):
    # The base image names a registry nobody listens on; --root is left
    # empty: the answer comes from the Dockerfile alone.
    root = tmp_path / "root"
    result = run("build", "--root", str(root), "--call", "targets", context)
    assert result.exit_code == 0 and result.stdout == TARGETS
    assert not root.exists() or not any(root.iterdir())


def test_call_check_is_pybuild_check(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox as base\nRUNN x\nCMD echo\n")
    checked = run("check", "--format", "json", str(tmp_path))
    called = run("build", "--call", "check,format=json", str(tmp_path))
    assert called.exit_code == checked.exit_code == 1
    assert called.stdout == checked.stdout
    assert [w["ruleName"] for w in json.loads(called.stdout)["warnings"]] == ["FromAsCasing", "JSONArgsRecommended"]
    (tmp_path / "Dockerfile").write_text("FROM busybox as base\n")
    warned = run("build", "--call", "check", str(tmp_path))
    assert warned.exit_code == 1  # as --check: BuildKit's lint status is 1 on any warning
    assert "Dockerfile:1: [FromAsCasing]" in warned.stdout


def test_an_outline_reports_the_dockerfiles_errors_as_a_build(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox AS app\nRUN --mount=type=secret,id=a,foo=b true\n")
    result = run("build", "--call", "outline", str(tmp_path))
    assert result.exit_code == 1
    assert "ERROR: Dockerfile:2: unexpected key 'foo' in 'foo=b'" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "Dockerfile").write_text("FROM busybox AS app\n")
    missing = run("build", "--call", "outline", "--target", "nope", str(tmp_path))
    assert missing.exit_code == 1
    assert 'ERROR: target stage "nope" could not be found' in missing.output


def test_an_outline_for_a_bad_platform_is_one_error_line(context):
    result = run("build", "--call", "outline", "--platform", "linux/amd64/v2/x", context)
    assert result.exit_code == 1
    assert 'ERROR: invalid platform: "linux/amd64/v2/x"' in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("call", ["lint", "outline,format=yaml", "targets,color=1"])
def test_an_unknown_call_is_a_usage_error(context, call):
    result = run("build", "--call", call, context)
    assert result.exit_code == 1  # pybuild's status for bad flags
    assert "--call" in result.output and "Traceback" not in result.output


# Instructions over several lines (a continuation, a heredoc): BuildKit
# locates them with one range per line. Captured as the fixtures above
# (--print=outline,format=json, `sources` left out).
MULTILINE = """\
# A one
ARG A=1 \\
    B=2
FROM scratch AS s
# C the c
ARG C=\\
${A:-x}
FROM 127.0.0.1:5099/busybox:latest
ARG A
COPY --from=s / /
RUN --mount=type=secret,id=hd <<EOT
echo hi
EOT
RUN --mount=type=ssh,id=k,required=false true
"""
MULTILINE_JSON = (
    '{"args":[{"name":"A","description":"one","value":"1","location":{"ranges":[{"start":{"line":2},"end"'
    ':{"line":2}},{"start":{"line":3},"end":{"line":3}}]}},{"name":"C","description":"the c","value":"x",'
    '"location":{"ranges":[{"start":{"line":6},"end":{"line":6}},{"start":{"line":7},"end":{"line":7}}]}}'
    '],"secrets":[{"name":"hd","location":{"ranges":[{"start":{"line":11},"end":{"line":11}},{"start":{"l'
    'ine":12},"end":{"line":12}},{"start":{"line":13},"end":{"line":13}}]}}],"ssh":[{"name":"k","location'
    '":{"ranges":[{"start":{"line":14},"end":{"line":14}}]}}]}'
)


def test_an_instruction_over_several_lines_has_a_range_per_line(tmp_path):
    (tmp_path / "Dockerfile").write_text(MULTILINE)
    found = json.loads(run("build", "--call", "outline,format=json", str(tmp_path)).stdout)
    assert found.pop("sources") == [base64.b64encode(MULTILINE.encode()).decode()]
    assert json.dumps(found, separators=(",", ":")) == MULTILINE_JSON


ONBUILD = """\
FROM 127.0.0.1:5099/busybox AS a
# OBARG from onbuild
ONBUILD ARG OBARG=1
ONBUILD RUN --mount=type=secret,id=ob true
FROM a AS b
RUN true
"""
# docker buildx build --print=outline . over ONBUILD, captured as above.
ONBUILD_OUTLINE = (
    "TARGET: b\n"
    "\n"
    "BUILD ARG   VALUE   DESCRIPTION\n"
    "OBARG       1       \n"
    "\n"
    "SECRET   REQUIRED\n"
    "ob       \n"
    "\n"
)


def test_the_onbuild_triggers_of_a_base_stage_count_at_the_from(tmp_path):
    (tmp_path / "Dockerfile").write_text(ONBUILD)
    assert run("build", "--call", "outline", str(tmp_path)).stdout == ONBUILD_OUTLINE
    found = json.loads(run("build", "--call", "outline,format=json", str(tmp_path)).stdout)
    # BuildKit 0.13 says line 1 (the trigger's line in its own text); later
    # BuildKit and pybuild's converter put a trigger at the FROM it runs at.
    lines = [item["location"]["ranges"] for item in found["args"] + found["secrets"]]
    assert lines == [[{"start": {"line": 5}, "end": {"line": 5}}]] * 2
    assert run("build", "--call", "outline", "--target", "a", str(tmp_path)).stdout == "TARGET: a\n\n"
