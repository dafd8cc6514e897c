"""`pybuild build` as a user runs it: progress formats, -q, --iidfile,
--metadata-file, error exits, and the contexts docker accepts."""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile

from cli_helpers import write_context

DOCKERFILE = """\
FROM {base}
ENV GREETING=hello
RUN echo hello; echo world
"""


def test_plain_progress_iidfile_and_metadata(cli, busybox_image, tmp_path):
    context = write_context(tmp_path / "ctx", DOCKERFILE.format(base=busybox_image.ref))
    iidfile, metadata_file = tmp_path / "iid", tmp_path / "meta.json"
    # No `build` word: `pybuild -t app .` is `pybuild build -t app .`
    done = cli.build("--progress=plain", "--no-cache", "-t", "cli-plain", "--iidfile", str(iidfile),
                     "--metadata-file", str(metadata_file), str(context), env={"SOURCE_DATE_EPOCH": "86400"})
    err = done.stderr.decode()
    assert done.returncode == 0, err
    # BuildKit's plain format: "#N name", "#N <seconds> output", "#N DONE 0.1s", blank line
    steps = dict(re.findall(r"^#(\d+) (\[.*)$", err, re.M))
    run = next(n for n, name in steps.items() if name == "[2/2] RUN echo hello; echo world")
    assert steps["1"].startswith(f"[1/2] FROM {busybox_image.ref}")
    assert re.search(rf"^#{run} \d+\.\d{{3}} hello\n#{run} \d+\.\d{{3}} world\n#{run} DONE \d+\.\ds\n\n", err, re.M)
    assert re.search(r"^#1 DONE \d+\.\ds$", err, re.M)
    assert "naming to docker.io/library/cli-plain:latest done" in err
    assert done.stdout == b""

    image_id = iidfile.read_text()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    metadata = json.loads(metadata_file.read_text())
    assert metadata["containerimage.config.digest"] == image_id
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", metadata["containerimage.digest"])
    assert metadata["containerimage.descriptor"]["digest"] == metadata["containerimage.digest"]
    assert metadata["image.name"] == "docker.io/library/cli-plain:latest"
    assert metadata["pybuild.executed"] == 2 and metadata["pybuild.cached"] == 0
    assert metadata["pybuild.duration"] > 0

    inspected = json.loads(cli.build("inspect", "cli-plain").stdout)
    assert inspected["Id"] == image_id
    assert inspected["Digest"] == metadata["containerimage.digest"]
    assert inspected["Config"]["created"].startswith("1970-01-02T00:00:00")  # SOURCE_DATE_EPOCH

    # -q: only the image ID on stdout, nothing on stderr; a cached rebuild.
    again = cli.build("build", "-q", "-t", "cli-plain", "--metadata-file", str(metadata_file), str(context),
                      env={"SOURCE_DATE_EPOCH": "86400"})
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode() == image_id + "\n"
    assert again.stderr == b""
    cached = json.loads(metadata_file.read_text())
    assert cached["pybuild.executed"] == 0 and cached["pybuild.cached"] >= 1


def test_rawjson_progress_from_the_environment(cli, busybox_image, tmp_path):
    context = write_context(tmp_path / "ctx", DOCKERFILE.format(base=busybox_image.ref) + "RUN echo raw\n")
    # PYBUILD_PROGRESS beats the config file's `progress`.
    (tmp_path / "config-home" / "pybuild").mkdir(parents=True)
    (tmp_path / "config-home" / "pybuild" / "config.toml").write_text('progress = "plain"\n')
    done = cli.build(str(context), env={"PYBUILD_PROGRESS": "rawjson"})
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.decode().splitlines()]
    vertexes = [v for e in events for v in e.get("vertexes", [])]
    run = [v for v in vertexes if v["name"] == "[3/3] RUN echo raw"]
    assert "started" in run[0] and "completed" not in run[0]
    assert run[-1]["completed"] >= run[-1]["started"] and "error" not in run[-1]
    logs = [base64.b64decode(log["data"]) for e in events for log in e.get("logs", [])
            if log["vertex"] == run[0]["digest"]]
    assert b"".join(logs) == b"raw\n"
    cached = [v for v in vertexes if v.get("cached")]
    assert {v["name"] for v in cached} >= {f"[1/3] FROM {busybox_image.ref}"} or cached


def test_bad_dockerfile_exits_1_with_its_line(cli, tmp_path):
    context = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a b\nRUNN make\n")
    done = cli.build("--progress=plain", str(context))
    err = done.stderr.decode()
    assert done.returncode == 1
    assert "ERROR: Dockerfile:3: unknown instruction: RUNN" in err
    assert ">>>    3 | RUNN make" in err
    assert "Traceback" not in err


def test_failing_run_exits_1_with_buildkit_message(cli, busybox_image, tmp_path):
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\nRUN echo oops; exit 3\n")
    done = cli.build("--progress=plain", str(context))
    err = done.stderr.decode()
    assert done.returncode == 1
    assert 'ERROR: process "/bin/sh -c echo oops; exit 3" did not complete successfully: exit code: 3' in err
    assert "  oops" in err.split("last output:")[1]
    assert "Traceback" not in err
    # Where it failed, as BuildKit prints the instruction's lines.
    assert "at Dockerfile:2:" in err and ">>>    2 | RUN echo oops; exit 3" in err


def test_a_copy_of_a_missing_file_shows_its_line(cli, busybox_image, tmp_path):
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\nENV A=1\nCOPY nothere.txt /\n")
    done = cli.build("--progress=plain", str(context))
    err = done.stderr.decode()
    assert done.returncode == 1
    assert 'ERROR: failed to calculate checksum: "/nothere.txt": not found' in err
    assert "at Dockerfile:3:" in err and ">>>    3 | COPY nothere.txt /" in err


def test_missing_context_exits_1(cli, tmp_path):
    done = cli.build(str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert b"unable to prepare context: path" in done.stderr


def _tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_context_and_dockerfile_from_stdin(cli, busybox_image, tmp_path):
    out = tmp_path / "out"
    archive = _tar({"Dockerfile.app": f"FROM {busybox_image.ref}\nCOPY greet.sh /\nRUN /greet.sh > /greeting\n",
                    "greet.sh": "#!/bin/sh\necho from-tar\n"})
    # A tar on stdin is the context; -f names a file inside it, as in docker.
    done = cli.build("-q", "-f", "Dockerfile.app", "-o", f"type=local,dest={out / 'tar'}", "-", input=archive)
    assert done.returncode == 0, done.stderr
    assert (out / "tar" / "greeting").read_text() == "from-tar\n"
    assert (out / "tar" / "greet.sh").stat().st_mode & 0o777 == 0o755

    # Text on stdin is the Dockerfile, with an empty context.
    done = cli.build("-q", "-o", f"type=local,dest={out / 'text'}", "-",
                     input=f"FROM {busybox_image.ref}\nRUN ls -A /ctx-check 2>/dev/null | wc -l > /n\n")
    assert done.returncode == 0, done.stderr
    assert (out / "text" / "n").read_text().strip() == "0"
    assert list((cli.root / "tmp").iterdir()) == []  # the unpacked context is gone
