"""`--secret` sources are capped at BuildKit's 500 KiB (MaxSecretSize): a
larger file, or an endless one like /dev/zero, is one error, and pybuild
reads no more than the cap of it."""

from __future__ import annotations

import os
import resource
import subprocess

import pytest

from cli_helpers import PYBUILD, write_context

CAP = 500 * 1024


def _run_measured(cli, *args: str) -> tuple[int, str, int]:
    """pybuild's exit status, stderr and peak RSS (KiB). Its address space is
    bounded too, so that a pybuild reading an endless source fails instead
    of taking the machine's memory."""
    def bounded():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    process = subprocess.Popen([*PYBUILD, "--root", str(cli.root), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=cli.env, preexec_fn=bounded)
    try:
        stderr = process.stderr.read().decode()
    finally:
        process.stderr.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return process.returncode, stderr, usage.ru_maxrss


@pytest.mark.parametrize("source", ["file", "/dev/zero"])
def test_a_secret_over_the_cap_is_refused_without_reading_it_whole(cli, tmp_path, source):
    if source == "file":
        source = tmp_path / "big"
        source.write_bytes(b"s" * (600 * 1024))
    context = write_context(tmp_path / "ctx", "FROM scratch\nLABEL a=b\n")
    status, stderr, peak_kib = _run_measured(cli, "build", "--secret", f"id=x,src={source}", str(context))
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR")]
    assert status == 1 and errors == [f"ERROR: secret x too big: max size 500KB ({CAP} bytes)"], stderr
    assert peak_kib < 400 * 1024, peak_kib  # pybuild itself is ~100 MiB; /dev/zero read whole is GiBs


def test_a_secret_from_the_environment_over_the_cap_is_refused(tmp_path):
    from builder.solver.secrets import SecretError, parse_secrets

    with pytest.raises(SecretError, match="secret x too big"):
        parse_secrets(["id=x,env=BIG"], {"BIG": "s" * (CAP + 1)})
    assert len(parse_secrets(["id=x,env=BIG"], {"BIG": "s" * CAP}).values["x"]) == CAP


def test_a_secret_up_to_the_cap_still_reaches_run(cli, busybox_image, tmp_path):
    source = tmp_path / "ok"
    source.write_bytes(b"s" * CAP)
    context = write_context(tmp_path / "ctx", f"FROM {busybox_image.ref}\n"
                            "RUN --mount=type=secret,id=x wc -c < /run/secrets/x > /size\n")
    done = cli.build("--secret", f"id=x,src={source}", "-o", f"type=local,dest={tmp_path / 'out'}", str(context))
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "out" / "size").read_text().strip() == str(CAP)
