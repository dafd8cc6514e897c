"""Issue 5: what a cache key covers, seen from real builds on a tmp root.

Each test builds a small Dockerfile FROM the busybox fixture a few times
and checks which steps ran (a recording reporter) and, where it matters,
what the image holds.
"""

from __future__ import annotations

import os

import pytest

from builder.build import build
from builder.errors import PybuildError
from fixtures import busybox
from e2e.cache_helpers import Recorder
from e2e.helpers import write_context


def _build(context, root, dockerfile, **kwargs):
    recorder = Recorder()
    result = build(context, dockerfile_text=dockerfile, root=root, reporter=recorder, **kwargs)
    return result, recorder


def test_context_changes(busybox_image, tmp_path):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n", "src/b.txt": "b\n", "src/c.txt": "c\n", "notes.txt": "n\n"})
    dockerfile = (f"FROM {busybox_image.ref}\nWORKDIR /app\nCOPY a.txt ./\nCOPY src/ ./src/\n"
                  "RUN cat a.txt src/* > /all.txt\n")
    first, rec = _build(context, root, dockerfile)
    assert len(rec.runs) == 4 and first.executed_steps > 0

    # Touched without a change, and a change in a file no COPY selects: all cached.
    os.utime(context / "a.txt", (12345, 12345))
    (context / "notes.txt").write_text("changed, but never copied\n")
    again, rec = _build(context, root, dockerfile)
    assert rec.steps == [] and again.executed_steps == 0
    assert again.image_id == first.image_id

    # A selected file changes: that COPY and what follows run, nothing before.
    (context / "src" / "c.txt").write_text("c, changed\n")
    third, rec = _build(context, root, dockerfile, outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert [n.split("] ", 1)[1] for n in rec.runs] == ["COPY src/ ./src/", "RUN cat a.txt src/* > /all.txt"]
    assert (tmp_path / "out" / "all.txt").read_text() == "a\nb\nc, changed\n"


def test_build_arg_reruns_the_steps_that_see_it(busybox_image, tmp_path):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    dockerfile = (f"FROM {busybox_image.ref}\nRUN echo before > /before\nCOPY a.txt /\nARG FLAVOR=plain\n"
                  "COPY a.txt /again.txt\nRUN echo $FLAVOR > /flavor\nRUN echo done > /done\n")
    _build(context, root, dockerfile, build_args={"FLAVOR": "one"})
    # An argument no stage declares never reaches a step.
    _, rec = _build(context, root, dockerfile, build_args={"FLAVOR": "one", "UNUSED": "x"})
    assert rec.steps == []
    # BuildKit puts every ARG in scope into RUN's environment: each RUN after
    # the ARG reruns, the COPYs (which do not see the env) stay cached.
    _, rec = _build(context, root, dockerfile, build_args={"FLAVOR": "two"},
                    outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert [n.split("] ", 1)[1] for n in rec.runs] == ["RUN echo two > /flavor", "RUN echo done > /done"]
    assert (tmp_path / "out" / "flavor").read_text() == "two\n"


def test_new_base_image_digest_rebuilds_the_stage_with_pull(busybox_image, tmp_path):
    # A tag of our own that we re-push with one more layer.
    ref = f"{busybox_image.registry.host}/cachekeys-base:latest"
    layout = tmp_path / "layout"
    busybox.build_busybox_layout(layout)
    busybox.skopeo_push(layout, "latest", ref)
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {"a.txt": "a\n"})
    dockerfile = f"FROM {ref}\nCOPY a.txt /\nRUN cat /etc/base-version 2>/dev/null > /seen; true\n"
    _build(context, root, dockerfile)

    variant = tmp_path / "variant"
    extra = busybox.write_image(variant, [busybox.busybox_layer_tar(), _one_file_tar("etc/base-version", b"2\n")],
                                arch=busybox.host_arch())
    busybox.write_index(variant, busybox.OCI_MANIFEST, extra.manifest, extra.manifest_size, "latest")
    busybox.skopeo_push(variant, "latest", ref)

    # Without --pull the tag stays resolved as it was: fully cached.
    _, rec = _build(context, root, dockerfile)
    assert rec.runs == []
    # --pull resolves the tag again: the new digest reruns the whole stage.
    _, rec = _build(context, root, dockerfile, pull=True, outputs=[f"type=local,dest={tmp_path / 'out'}"],
                    explain=True)
    assert [n.split("] ", 1)[1].split(" ")[0] for n in rec.runs] == ["COPY", "RUN"]
    assert (tmp_path / "out" / "seen").read_text() == "2\n"
    assert f"[1/3] FROM {ref}: rebuilt because base image digest changed" in "\n".join(rec.messages)


def _one_file_tar(name: str, data: bytes) -> bytes:
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_secret_values_and_cache_mount_contents_never_enter_a_key(busybox_image, tmp_path):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {})
    secret = tmp_path / "token"
    secret.write_text("first value")
    dockerfile = (f"FROM {busybox_image.ref}\n"
                  "RUN --mount=type=secret,id=token test -s /run/secrets/token && echo ok > /secret-seen\n"
                  "RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /runs\n")
    _build(context, root, dockerfile, secrets=[f"id=token,src={secret}"])
    secret.write_text("another value")
    for cache_dir in (root / "cachemounts").iterdir():
        if cache_dir.is_dir():
            (cache_dir / "log").write_text("changed from outside\n" * 5)
    _, rec = _build(context, root, dockerfile, secrets=[f"id=token,src={secret}"])
    assert rec.steps == []
    # --no-cache runs both again and the image gets the new result (the
    # cache mount kept its contents: 5 lines + this run's).
    _, rec = _build(context, root, dockerfile, secrets=[f"id=token,src={secret}"], no_cache=True,
                    outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert len(rec.runs) == 2
    assert (tmp_path / "out" / "runs").read_text().strip() == "6"


def test_portable_keys_ignore_owner_and_umask_under_chmod(busybox_image, tmp_path):
    root = tmp_path / "root"
    dockerfile = (f"FROM {busybox_image.ref}\nCOPY --chmod=644 conf/ /conf/\nCOPY data.txt /\n"
                  "RUN ls -ln /conf /data.txt > /listing\n")
    one = tmp_path / "one"
    write_context(one, {"conf/app.ini": "x=1\n", "data.txt": "d\n"})
    os.chmod(one / "conf" / "app.ini", 0o644)
    os.chmod(one / "data.txt", 0o644)
    first, _ = _build(one, root, dockerfile)

    # Another checkout: other owner, other umask for the --chmod'ed files.
    two = tmp_path / "two"
    write_context(two, {"conf/app.ini": "x=1\n", "data.txt": "d\n"})
    os.chmod(two / "conf" / "app.ini", 0o600)
    os.chmod(two / "conf", 0o700)
    os.chmod(two / "data.txt", 0o644)
    for path in (two / "conf", two / "conf" / "app.ini", two / "data.txt"):
        os.chown(path, 1234, 1234)
    second, rec = _build(two, root, dockerfile)
    assert rec.steps == [] and second.image_id == first.image_id

    # Without --chmod the mode is copied, so it is part of the key.
    os.chmod(two / "data.txt", 0o600)
    _, rec = _build(two, root, dockerfile)
    assert [n.split("] ", 1)[1].split(" ")[0] for n in rec.runs] == ["COPY", "RUN"]


def test_no_cache_filter_reruns_the_named_stage_and_its_dependents(busybox_image, tmp_path):
    context, root = tmp_path / "ctx", tmp_path / "root"
    write_context(context, {})
    dockerfile = (f"FROM {busybox_image.ref} AS deps\nRUN echo deps > /deps\n"
                  f"FROM {busybox_image.ref} AS other\nRUN echo other > /other\n"
                  f"FROM {busybox_image.ref}\nCOPY --from=deps /deps /\nCOPY --from=other /other /\n"
                  "RUN cat /deps /other > /both\n")
    _build(context, root, dockerfile)
    _, rec = _build(context, root, dockerfile, no_cache_filter="deps")
    ran = [n.split("] ", 1)[0] + "] " + n.split("] ", 1)[1].split(" ")[0] for n in rec.runs]
    assert "[deps 2/2] RUN" in ran
    assert not any(n.startswith("[other") for n in ran)
    # Everything above the re-run result in the final stage runs again.
    assert ran[-3:] == ["[stage-2 2/4] COPY", "[stage-2 3/4] COPY", "[stage-2 4/4] RUN"]
    with pytest.raises(PybuildError, match="no stage named 'nope'"):
        _build(context, root, dockerfile, no_cache_filter="deps,nope")
