"""`pybuild build`: the flags become one builder.build.BuildRequest (made
in `_request` alone), the context is fetched when remote, and the result is
announced, written to --iidfile/--metadata-file and memoised."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from builder.attest.options import cli_attest_specs
from builder.cli.call import parse_call, run_call
from builder.cli.check import run_checks
from builder.cli.guard import EXIT_ERROR, SignalGuard, run_guarded
from builder.cli.shared import Invocation, key_values, load_settings, root_dir, root_options

PROGRESS_MODES = ["auto", "plain", "tty", "quiet", "rawjson"]


@click.command()
@click.argument("context", default=".")
@click.option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin).")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag). Repeatable.")
@click.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable (KEY=VALUE or KEY).")
@click.option("--target", help="Set the target build stage.")
@click.option("--platform", help="Target platform (os/arch[/variant]); several, comma-separated, make an index.")
@click.option("-o", "--output", "outputs", multiple=True,
              help="Output destination (type=image|registry|oci|docker|local|tar,dest=...,...). Repeatable.")
@click.option("--push", is_flag=True, help="Push each tag to its registry (type=image,push=true).")
@click.option("--load", is_flag=True, help="Store the image in the local store (the default without -o).")
@click.option("--no-cache", is_flag=True, help="Do not use the cache.")
@click.option("--no-cache-filter", "no_cache_filter", multiple=True,
              help="Run these stages again without the cache (STAGE[,STAGE]).")
@click.option("--explain", is_flag=True, help="Say why each step that ran missed the cache.")
@click.option("--cache-to", "cache_to", multiple=True,
              help="Export the build cache (type=registry,ref=REF[,mode=min|max][,cache-mounts=true] | "
                   "type=local,dest=DIR | type=inline).")
@click.option("--cache-from", "cache_from", multiple=True,
              help="Import a build cache (type=registry,ref=REF | type=local,src=DIR | IMAGE).")
@click.option("--pull", is_flag=True, help="Always resolve base images from their registry.")
@click.option("--secret", "secrets", multiple=True, help="Secret for RUN --mount=type=secret (id=ID,src=FILE|env=VAR).")
@click.option("--ssh", multiple=True, help="SSH agent socket for RUN --mount=type=ssh (default|ID=PATH).")
@click.option("-m", "--memory", help="Memory limit of each RUN (512m, 1g); no swap beyond it.")
@click.option("--cpus", help="CPUs each RUN may use (1.5).")
@click.option("--cpu-quota", type=int, help="CPU time of each RUN per --cpu-period, in microseconds.")
@click.option("--cpu-period", type=int, help="CFS period for --cpu-quota, in microseconds (default 100000).")
@click.option("--pids-limit", type=int, help="Most processes each RUN may have at once.")
@click.option("--ulimit", "ulimits", multiple=True, help="Resource limit of RUN processes (nofile=1024:2048). Repeatable.")
@click.option("--network", default="default", show_default=True, type=click.Choice(["default", "host", "none"]),
              help="Networking mode for RUN instructions.")
@click.option("--label", "labels", multiple=True, help="Set metadata on the image (KEY=VALUE). Repeatable.")
@click.option("--annotation", "annotations", multiple=True,
              help="Add an annotation to the image manifest (KEY=VALUE or manifest:KEY=VALUE). Repeatable.")
@click.option("--squash", is_flag=True, help="Merge the new layers of the built stage into one layer.")
@click.option("--build-context", "build_contexts", multiple=True,
              help="Additional named context (NAME=DIR, NAME=docker-image://REF or "
                   "NAME=oci-layout://PATH[:TAG][@DIGEST]), used by FROM NAME, "
                   "COPY --from=NAME and RUN --mount=from=NAME. Repeatable.")
@click.option("--add-host", "add_hosts", multiple=True, help="Add a line to /etc/hosts of each RUN (HOST:IP). Repeatable.")
@click.option("--provenance", help="Provenance attestation (true, false, mode=min|max[,version=v1]); default "
                                    "mode=min where an image leaves the machine [env BUILDX_NO_DEFAULT_ATTESTATIONS].")
@click.option("--sbom", help="SBOM attestation (true, false, scan-stage=true).")
@click.option("--attest", "attest", multiple=True,
              help="Attestation (type=provenance|sbom,...; disabled=true). Repeatable. docs/attestations.md.")
@click.option("--check", "check_only", is_flag=True,
              help="Run the build checks instead of building (as `pybuild check`; exit 1 on warnings).")
@click.option("--call", help="Answer instead of building: check, outline (build args, secrets, ssh of the "
                             "target) or targets (the stages), [,format=json] (as buildx).")
@click.option("--isolation", type=click.Choice(["builtin", "oci", "chroot"]),
              help="How RUN steps are isolated [config: isolation; default oci when runc/crun exists; "
                   "chroot, weaker, for unprivileged containers: docs/isolation.md].")
@click.option("--insecure-registry", "insecure", multiple=True,
              help="Registry reached over plain HTTP (HOST[:PORT]). Repeatable.")
@click.option("--progress", type=click.Choice(PROGRESS_MODES),
              help="Progress output [env PYBUILD_PROGRESS; default auto: tty on a terminal, else plain].")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID (on stdout).")
@click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image ID to this file.")
@click.option("--metadata-file", type=click.Path(dir_okay=False), help="Write build metadata (JSON) to this file.")
@root_options
@click.pass_obj
def build(invocation: Invocation | None, **options):
    """Build an image from a Dockerfile and a context.

    CONTEXT is a directory (default .), `-` for a tar archive or a
    Dockerfile on stdin, a git URL (https://host/repo.git#ref:subdir,
    git@host:repo.git) or the URL of a tar archive.

    \b
    Examples:
      pybuild -t app .
      pybuild -t app --build-arg VERSION=1.2 --target runtime .
      pybuild -o type=docker,dest=app.tar -t app .
      pybuild -q -t app - < context.tar
      pybuild -t app https://github.com/org/repo.git#main:docker
      pybuild --progress=plain --metadata-file meta.json -t app .
      pybuild --build-context src=../src --build-context base=docker-image://alpine:3 -t app .
      pybuild --check .
      pybuild --call outline --target runtime .
    """
    from frontend.parser import read_dockerfile

    context, dockerfile, debug = options["context"], options["dockerfile"], options["debug"]
    if dockerfile == "-" and context == "-":
        raise click.UsageError("can't use stdin for both the build context and the Dockerfile")
    call, call_format = parse_call(options["call"])
    if options["check_only"] or call == "check":
        # docker build --check: the frontend's lint subrequest, whose
        # status code is 1 as soon as there is a warning.
        found, _ = run_checks(context, dockerfile, options["build_args"], options["target"], debug, call_format)
        if found.warnings or found.errors:
            sys.exit(EXIT_ERROR)
        return
    if call != "build":
        run_call(call, call_format, {**options, "build_args": key_values(options["build_args"], "--build-arg")},
                 debug)  # fmt: skip
        return
    pairs = _pair_flags(options)
    settings = run_guarded(debug, lambda: load_settings(options["config_file"], root=options["root"],
                                                        isolation=options["isolation"],
                                                        progress=options["progress"], insecure=options["insecure"]))
    stdin_text = run_guarded(debug, lambda: read_dockerfile(sys.stdin.buffer)) if dockerfile == "-" else None
    attest = run_guarded(debug, lambda: cli_attest_specs(provenance=options["provenance"], sbom=options["sbom"],
                                                         attest=options["attest"]))
    request = _request(options, pairs, settings)
    keys = run_guarded(debug, lambda: _signing_keys(request.outputs))
    request = replace(request, attest=attest, signing_keys=keys)
    shown = {"dockerfile_text": None}  # for the lines shown around a Dockerfile error

    def action():
        from builder.context.inputs import prepare_context

        with prepare_context(context, root=root_dir(settings), stdin=sys.stdin.buffer) as prepared:
            dockerfile_path, dockerfile_text = _dockerfile_for(prepared, dockerfile, stdin_text)
            shown["dockerfile_text"] = dockerfile_text
            memoisable = (invocation is not None and not prepared.is_remote and stdin_text is None
                          and not _defeats_memo(options))
            result = _run(replace(request, context=prepared.directory, dockerfile=dockerfile_path,
                                  dockerfile_text=dockerfile_text, context_origin=prepared.origin),
                          options, settings, invocation if memoisable else None)
        if options["quiet"]:
            click.echo(result.image_id)

    with SignalGuard():
        run_guarded(debug, action, lambda: shown["dockerfile_text"])


def _pair_flags(options: dict) -> dict[str, dict[str, str]]:
    """The KEY=VALUE flags, checked before anything else is read."""
    return {"build_args": key_values(options["build_args"], "--build-arg"),
            "labels": key_values(options["labels"], "--label"),
            "annotations": _annotations(options["annotations"])}


def _request(options: dict, pairs: dict[str, dict[str, str]], settings):
    """The one place where the flags and the settings become the build's
    request; its context is the one named, until it is prepared."""
    from builder.build import BuildRequest

    return BuildRequest(
        options["context"],
        build_args=pairs["build_args"], target=options["target"], platform=options["platform"],
        build_contexts=options["build_contexts"],
        network="host" if options["network"] == "default" else options["network"],
        secrets=options["secrets"], ssh=options["ssh"], add_hosts=options["add_hosts"],
        # 0 leaves a limit unset, as for docker's flags.
        memory=options["memory"] or None, cpus=options["cpus"] or None, cpu_quota=options["cpu_quota"] or None,
        cpu_period=options["cpu_period"] or None, pids_limit=options["pids_limit"] or None,
        ulimits=options["ulimits"],
        no_cache=options["no_cache"], no_cache_filter=options["no_cache_filter"], explain=options["explain"],
        cache_to=options["cache_to"], cache_from=options["cache_from"], pull=options["pull"],
        tags=options["tags"], outputs=_outputs(options), push=options["push"],
        labels=pairs["labels"], annotations=pairs["annotations"], squash=options["squash"],
        root=settings.root, isolation=settings.isolation, registry_hosts=settings.registry_hosts,
        gc_policy=settings.config.gc_policy, size_limits=settings.config.limits,
    )


def _outputs(options: dict) -> tuple[str, ...]:
    """The -o outputs, with the local store added when --load asks for it
    next to them (without -o, the store is the default already). As
    buildx's --load next to -o: both exports."""
    outputs = tuple(options["outputs"])
    return (*outputs, "type=image") if options["load"] and outputs else outputs


def _signing_keys(outputs) -> dict:
    """The keys of the outputs' sign= files, read (an encrypted key's
    password asked) before anything is built or uploaded."""
    from builder.cli.sign import signing_key
    from builder.export.outputs import parse_output
    from builder.export.sign import signed_outputs

    specs = signed_outputs([parse_output(text) for text in outputs])
    return {spec.attrs["sign"]: signing_key(spec.attrs["sign"]) for spec in specs}


def _defeats_memo(options: dict) -> bool:
    """Flags whose effect a memo cannot check or replay (builder.root.memo)."""
    return any(options[name] for name in ("outputs", "push", "no_cache", "no_cache_filter", "explain",
                                          "cache_to", "cache_from", "pull", "metadata_file"))


def _run(request, options: dict, settings, invocation: Invocation | None):
    """Build `request`, showing progress; memoise the build under
    `invocation` when one is given."""
    from builder.build import build
    from builder.root import memo
    from builder.solver.progress import make_reporter

    quiet = options["quiet"]
    reporter = make_reporter("quiet" if quiet else settings.progress)
    observer = None
    if invocation is not None:
        observer = memo.Observer(invocation.started_ns)
        reporter = memo.RecordingReporter(reporter)
        observer.look_file(request.context)
        observer.look_file(request.dockerfile or Path(request.context) / "Dockerfile")
        observer.look_build_contexts(request.build_contexts)
        if settings.config.path is not None:
            observer.look_file(settings.config.path, read_ns=observer.started_ns)  # read at the start
    try:
        result = build(request, reporter=reporter, observer=observer)
        _write_result_files(result, options["iidfile"], options["metadata_file"])
        if not quiet:
            memo.announce(reporter, result.tags, result.image_id, result.duration)
        if observer is not None:
            answer = memo.Answer(image_id=result.image_id, manifest=result.manifest_digest, tags=result.tags,
                                 warnings=reporter.warnings, progress=settings.progress.value, quiet=quiet,
                                 iidfile=options["iidfile"],
                                 config_path=str(settings.config.path) if settings.config.path else None,
                                 secrets=request.secrets, ssh=request.ssh)
            memo.record(root_dir(settings), list(invocation.argv), observer, answer, debug=options["debug"])
    finally:
        reporter.close()
    return result


def _annotations(values) -> dict[str, str]:
    """`KEY=VALUE` or `manifest:KEY=VALUE` (buildx's default target for an
    image output); other targets are set with -o annotation-index.KEY=..."""
    plain = {}
    for key, value in key_values(values, "--annotation").items():
        kind, sep, name = key.partition(":")
        if sep and kind not in ("manifest",):
            raise click.BadParameter(f"{key!r}: only manifest annotations are set with --annotation; "
                                     "use -o type=...,annotation-index.KEY=VALUE for the index",
                                     param_hint="--annotation")
        plain[name if sep else key] = value
    return plain


def _dockerfile_for(prepared, dockerfile: str | None, stdin_text: str | None) -> tuple[Path | None, str | None]:
    """The Dockerfile's path and, when already known, its text. docker
    resolves -f against the working directory for a local context and
    inside the context for stdin and remote ones."""
    if stdin_text is not None:
        return None, stdin_text
    if prepared.dockerfile_text is not None:
        return None, prepared.dockerfile_text
    from builder.context.dockerfile import read_dockerfile_at
    from runtime.fsutil import resolve_in_root

    if dockerfile and prepared.is_remote and not Path(dockerfile).is_absolute():
        # Inside a fetched context: its directories resolve inside it too.
        path = resolve_in_root(prepared.directory, dockerfile, follow_final=False)
    elif dockerfile:
        path = Path(dockerfile)
    else:
        path = prepared.directory / "Dockerfile"
    text = read_dockerfile_at(path)
    # Without -f, build() names it "Dockerfile" in messages, as docker does.
    return (path if dockerfile else None), text


def _write_result_files(result, iidfile: str | None, metadata_file: str | None) -> None:
    if iidfile:
        Path(iidfile).write_text(result.image_id)
    if metadata_file:
        Path(metadata_file).write_text(json.dumps(build_metadata(result), indent=2, sort_keys=True) + "\n")


def build_metadata(result) -> dict:
    """buildx's --metadata-file keys, plus pybuild's own under `pybuild.`."""
    manifest = result.image.manifest
    metadata = {
        "containerimage.digest": result.manifest_digest,
        "containerimage.config.digest": result.image_id,
        "containerimage.descriptor": {"mediaType": manifest.media_type, "digest": str(manifest.digest),
                                      "size": manifest.size},
        "image.name": ",".join(result.tags),
        "pybuild.duration": round(result.duration, 3),
        "pybuild.cached": result.cached_steps,
        "pybuild.executed": result.executed_steps,
    }
    if result.pushed:
        metadata["pybuild.pushed"] = dict(result.pushed)
    return metadata


COMMANDS = (build,)
