"""frontend.outline: the corners the buildx fixtures of
tests/cli/test_call_outline.py do not reach."""

import time

import pytest

from frontend.check import no_image
from frontend.errors import DockerfileError
from frontend.ops import Platform
from frontend.outline import outline, targets


def args(text: str, **options) -> list[tuple[str, str, int]]:
    found = outline(text, resolve_image=no_image, **options)
    return [(a.name, a.value, a.location.start) for a in found.args]


def test_a_global_arg_that_reads_itself_keeps_what_it_read_before():
    # BuildKit 0.13 overflows its stack on this file (its daemon died when
    # asked); later versions keep the earlier definition's dependencies,
    # as pybuild does: REG counts through IMG.
    text = "ARG REG=r.example\nARG IMG=$REG/app\nARG IMG=${IMG}:1\nFROM $IMG\n"
    assert args(text) == [("REG", "r.example", 1), ("IMG", "r.example/app:1", 3)]


def test_global_args_that_read_each_other_end():
    text = "ARG B\nARG A=x$B\nARG B=y$A\nFROM busybox:$B\n"
    assert args(text) == [("A", "x", 2), ("B", "yx", 3)]


def test_a_platform_flag_counts_its_args_and_other_stages_do_not():
    text = ("ARG PLAT=linux/arm64\nARG UNSEEN=1\nFROM --platform=$PLAT busybox AS a\nARG IN_A\n"
            "FROM busybox AS b\nARG IN_B=2\n")  # fmt: skip
    assert args(text, target="a") == [("PLAT", "linux/arm64", 1), ("IN_A", "", 4)]
    assert args(text) == [("IN_B", "2", 6)]


def test_a_secret_id_is_expanded_in_the_stage_scope():
    text = "FROM busybox\nARG KIND=npm\nENV SUFFIX=rc\nRUN --mount=type=secret,id=${KIND}${SUFFIX} true\n"
    found = outline(text, resolve_image=no_image, build_args={"KIND": "pip"})
    assert [(s.name, s.required, s.location.start) for s in found.secrets] == [("piprc", False, 4)]


def test_targets_need_the_parser_only_and_report_its_errors():
    listed = targets("FROM busybox AS a\nCOPY --from=nowhere /x /y\nFROM a\n")
    assert [(t.name, t.default, t.base) for t in listed] == [("a", False, "busybox"), ("", True, "a")]
    with pytest.raises(DockerfileError, match="unknown instruction: RUNN"):
        targets("FROM busybox\nRUNN x\n")


def test_platform_args_take_the_target_and_the_build_platform():
    text = "ARG T=$TARGETARCH B=$BUILDARCH\nFROM busybox:$T-$B\n"
    found = args(text, platform=Platform(architecture="arm64"))
    assert found == [("T", "arm64", 1), ("B", "amd64", 1)]


def test_stages_that_read_each_other_in_a_chain_are_walked_once_each():
    # Each stage built on the one before and copying from the one before
    # that: walking every path would take 2^(n/1.4) steps (hours at 60).
    lines = ["FROM busybox AS s0\nARG A0=0"]
    lines += [f"FROM s{i - 1} AS s{i}\nARG A{i}={i}\nCOPY --from=s{max(i - 2, 0)} /a /a" for i in range(1, 60)]
    started = time.monotonic()
    found = args("\n".join(lines) + "\n")
    assert time.monotonic() - started < 20
    assert [name for name, _, _ in found] == [f"A{i}" for i in range(60)]
