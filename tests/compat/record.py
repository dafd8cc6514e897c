"""Record testdata/compat cases' expected.json from docker 26.

    python tests/compat/record.py testdata/compat/NAME [...]   # these cases
    python tests/compat/record.py --all                        # every case

Each case is built by docker 26 (buildx, BuildKit 0.13) and its record
(tests/compat/README.md, "What is compared") written to the case's
expected.json. Cases judged by the reference (case.json "judge":
"reference") are left alone: their expected.json is written by hand.

docker: --docker-host URL (or PYBUILD_COMPAT_DOCKER_HOST; DOCKER_HOST is not
read, as it often names the shared graph-driver daemon) names a running docker 26 daemon
that keeps images in containerd's store (a graph-driver daemon is refused:
its images are moby's exporter's, not BuildKit's); without one a private
daemon is started as the docker26_multiplatform fixture does
(tests/fixtures/docker26.py) and ended afterwards.
The base: --base HOST/busybox:TAG names the busybox image in a plain-HTTP
loopback registry that daemon trusts (e.g. 127.0.0.1:5099/busybox:latest);
without one a private registry holding the fixture's busybox is started.
A case fails to record (exit status 1, others still recorded) when docker
fails without case.json naming an error_key its message contains, or
succeeds where one is named."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compat.builders import (BaseImage, DockerClient, GraphDriverDaemon, base_image, buildx_config,  # noqa: E402
                             docker_prune, docker_version, scratch)
from compat.cases import CASES, Case, CaseError, all_cases, load_case  # noqa: E402
from compat.rebuilds import docker_case  # noqa: E402


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="record.py", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", type=Path, help="case directories (testdata/compat/NAME)")
    parser.add_argument("--all", action="store_true", help=f"every case in {CASES}")
    parser.add_argument("--docker-host", default=os.environ.get("PYBUILD_COMPAT_DOCKER_HOST"),
                        help="docker 26's socket URL (default: $PYBUILD_COMPAT_DOCKER_HOST, else a private daemon)")
    parser.add_argument("--base", help="busybox's reference in a loopback registry (default: a private one)")
    options = parser.parse_args(argv)
    if bool(options.cases) == options.all:
        parser.error("name case directories or give --all")
    return options


def _private_base(stack: ExitStack) -> str:
    from fixtures import busybox
    from fixtures.registry import remove_registry, start_registry
    home = scratch("pb-compat-reg-")
    stack.callback(shutil.rmtree, home, ignore_errors=True)
    registry = start_registry(home / "registry")
    stack.callback(remove_registry, registry)
    busybox.build_busybox_layout(home / "layout")
    ref = f"{registry.host}/busybox:latest"
    busybox.skopeo_push(home / "layout", "latest", ref)
    return ref


def _docker(stack: ExitStack, host: str | None) -> DockerClient:
    from fixtures.docker26 import API_VERSION, CLIENT, start_docker26, stop_docker26
    from fixtures.tools import TRIXIE_TOOLS
    prefix = os.environ.get("PYBUILD_TRIXIE_PREFIX", "/opt/pybuild-trixie")
    if host is None:
        daemon = start_docker26(os.path.join(prefix, TRIXIE_TOOLS["dockerd26"]),
                                os.path.join(prefix, TRIXIE_TOOLS["buildx"]))
        stack.callback(stop_docker26, daemon)
        return DockerClient(daemon.argv, daemon.env)
    config = scratch("pb-compat-dcfg-")
    stack.callback(shutil.rmtree, config, ignore_errors=True)
    env = {**os.environ, "DOCKER_API_VERSION": API_VERSION, "DOCKER_BUILDKIT": "1",
           "DOCKER_CONFIG": str(buildx_config(config))}
    env.pop("DOCKER_HOST", None)
    return DockerClient([CLIENT, "-H", host], env)


def record_case(case: Case, image: BaseImage, docker: DockerClient, oracle: str) -> str | None:
    """Write the case's expected.json; the reason when it cannot."""
    work = scratch("pb-compat-rec-")
    try:
        result = docker_case(case, image, docker, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "error" in result:
        message = result["error"]["message"]
        if not case.error_key:
            return f"docker failed and case.json names no error_key: {message}"
        if case.error_key not in message:
            return f"docker's message lacks the error_key {case.error_key!r}: {message}"
    elif case.error_key:
        return f"case.json names error_key {case.error_key!r} but docker built the image"
    expected = {"recorded_with": oracle, **result}
    case.expected_path.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return None


def main(argv: list[str] | None = None) -> int:
    options = _arguments(argv)
    try:
        cases = all_cases() if options.all else [load_case(path) for path in options.cases]
    except CaseError as exc:
        print(f"record.py: {exc}", file=sys.stderr)
        return 1
    failed = 0
    with ExitStack() as stack:
        image = base_image(options.base or _private_base(stack))
        docker = _docker(stack, options.docker_host)
        try:
            oracle = docker_version(docker.argv, docker.env)
        except GraphDriverDaemon as exc:
            print(f"record.py: {exc}", file=sys.stderr)
            return 1
        for case in cases:
            if case.judge != "docker26":
                print(f"{case.name}: judged by the reference, expected.json written by hand: left alone")
                continue
            problem = record_case(case, image, docker, oracle)
            failed += problem is not None
            print(f"{case.name}: {problem or 'recorded'}", file=sys.stderr if problem else sys.stdout)
        stack.callback(docker_prune, docker)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
