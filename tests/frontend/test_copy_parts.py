"""convert(): a COPY/ADD whose sources are of different kinds (local
paths, URLs, git, heredocs) is one CopyParts op and one layer, its parts in
BuildKit's order (dispatchCopy: the source paths as written, then the
heredocs); an instruction with one kind of source keeps its FileCopy or
WriteFiles."""

from __future__ import annotations

import pytest
from golden import FakeResolver

from frontend import DockerfileError, convert
from frontend.ops import ContextSource, CopyPart, CopyParts, FileCopy, GitSource, HttpSource, InlineFile, WriteFiles


def build(text: str, **kwargs):
    return convert(text, resolve_image=FakeResolver(), **kwargs)


def last(definition):
    return definition.op(definition.target)


def layer_entries(definition) -> list[str]:
    return [h.created_by for h in definition.image.history if not h.empty_layer]


def test_heredoc_and_local_files_are_one_op_and_one_layer():
    d = build("FROM busybox\nENV WHO=world\nWORKDIR /app\n"
              "COPY --chown=1:2 --chmod=0640 <<EOF local.txt sub/ ./\nhello $WHO\nEOF\n")
    op = last(d)
    assert isinstance(op, CopyParts)
    assert (op.dest, op.chown, op.chmod, op.is_add) == ("/app/", "1:2", "0640", False)
    local, inline = op.parts
    assert local == CopyPart(input=1, sources=("/local.txt", "/sub"))
    assert inline == CopyPart(files=(InlineFile("EOF", b"hello world\n"),))
    assert isinstance(d.op(op.inputs[1]), ContextSource)
    assert d.op(op.inputs[0]).path == "/app"  # the WORKDIR below it
    # BuildKit writes the paths, then the heredocs, then the destination as written.
    assert d.image.history[-1].created_by == "COPY --chown=1:2 --chmod=0640 local.txt sub/ <<EOF ./ # buildkit"
    assert layer_entries(d)[-2:] == ["WORKDIR /app", d.image.history[-1].created_by]


def test_add_heredoc_and_local_archive_unpacks_the_archive():
    op = last(build("FROM busybox\nADD <<EOF site.tar.gz /srv/\nx\nEOF\n"))
    assert isinstance(op, CopyParts) and op.is_add
    assert op.parts[0] == CopyPart(input=1, sources=("/site.tar.gz",), unpack=True)
    assert op.parts[1].files == (InlineFile("EOF", b"x\n"),)


def test_several_urls_keep_their_order_and_are_not_unpacked():
    d = build("FROM busybox\nADD https://h.example/a.txt https://h.example/x/b.tar /dl/\n")
    op = last(d)
    assert isinstance(op, CopyParts)
    a, b = (d.op(v) for v in op.inputs[1:])
    assert a == HttpSource(url="https://h.example/a.txt", filename="a.txt")
    assert b == HttpSource(url="https://h.example/x/b.tar", filename="b.tar")
    assert op.parts == (CopyPart(input=1, sources=("/a.txt",)), CopyPart(input=2, sources=("/b.tar",)))
    assert d.image.history[-1].created_by == "ADD https://h.example/a.txt https://h.example/x/b.tar /dl/ # buildkit"


def test_url_and_local_sources_interleave_as_written():
    d = build("FROM busybox\nADD one.tar https://h.example/two.tar three.txt four.txt /d/\n")
    op = last(d)
    context, url = op.inputs[1], op.inputs[2]
    assert isinstance(d.op(context), ContextSource) and isinstance(d.op(url), HttpSource)
    # A local archive is unpacked by ADD, a URL's file is not (BuildKit's AttemptUnpack).
    assert op.parts == (
        CopyPart(input=1, sources=("/one.tar",), unpack=True),
        CopyPart(input=2, sources=("/two.tar",)),
        CopyPart(input=1, sources=("/three.txt", "/four.txt"), unpack=True),
    )


def test_unpack_flag_applies_to_every_source():
    op = last(build("FROM busybox\nADD --unpack=true https://h.example/r.tgz l.tgz /d/\n"))
    assert [p.unpack for p in op.parts] == [True, True]
    op = last(build("FROM busybox\nADD --unpack=false https://h.example/r.tgz l.tgz /d/\n"))
    assert [p.unpack for p in op.parts] == [False, False]


def test_the_same_url_twice_is_one_input():
    op = last(build("FROM busybox\nADD https://h.example/a https://h.example/a /d/\n"))
    assert len(op.inputs) == 2 and [p.input for p in op.parts] == [1, 1]


def test_git_and_local_sources_mix_too():
    d = build("FROM busybox\nADD https://github.com/moby/buildkit.git#v0.13:docs extra.md /src/\n")
    op = last(d)
    assert d.op(op.inputs[1]) == GitSource(remote="https://github.com/moby/buildkit.git", ref="v0.13")
    assert op.parts == (CopyPart(input=1, sources=("/docs",)), CopyPart(input=2, sources=("/extra.md",), unpack=True))


def test_copy_from_stage_with_a_heredoc():
    d = build("FROM busybox AS b\nRUN make\nFROM busybox\nCOPY --from=b /out <<EOF /dst/\nx\nEOF\n")
    op = last(d)
    assert d.op(op.inputs[1]).args[-1] == "make"
    assert op.parts[0] == CopyPart(input=1, sources=("/out",))


def test_one_kind_of_source_keeps_its_op():
    assert isinstance(last(build("FROM busybox\nCOPY a b /d/\n")), FileCopy)
    assert isinstance(last(build("FROM busybox\nADD https://h.example/a /d/\n")), FileCopy)
    assert isinstance(last(build("FROM busybox\nCOPY <<A <<B /d/\na\nA\nb\nB\n")), WriteFiles)


@pytest.mark.parametrize("text, message", [
    ("COPY <<EOF local.txt /dest\nx\nEOF\n",
     "When using COPY with more than one source file, the destination must be a directory and end with a /"),
    ("ADD https://h.example/a https://h.example/b /file\n",
     "When using ADD with more than one source file, the destination must be a directory and end with a /"),
    ("ADD --checksum=sha256:abc https://h.example/a local /d/\n", "checksum can't be specified for multiple sources"),
    ("COPY https://h.example/a local /d/\n", "source can't be a URL for COPY"),
])
def test_what_buildkit_rejects_stays_rejected(text, message):
    with pytest.raises(DockerfileError) as err:
        build("FROM busybox\n" + text)
    assert message in str(err.value) and err.value.location is not None


def test_checksum_with_one_url_and_a_heredoc():
    # BuildKit counts only the source paths: the heredoc does not make it "multiple sources".
    d = build("FROM busybox\nADD --checksum=sha256:abc https://h.example/a <<EOF /d/\nx\nEOF\n")
    op = last(d)
    assert d.op(op.inputs[1]).checksum == "sha256:abc"
