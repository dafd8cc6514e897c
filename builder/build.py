"""The Python API: one call builds an image (the CLI is a thin layer on it).

A `BuildRequest` says what to build and how; `build` runs it and returns a
`BuildResult`:

    from builder.build import BuildRequest, build

    request = BuildRequest("testdata/hello", tags=("hello",), root="/tmp/pb",
                           build_args={"BASE": "127.0.0.1:5000/busybox:latest"})
    result = build(request)
    print(result.image_id, result.manifest_digest, result.executed_steps)

`build(context, **fields)` is short for `build(BuildRequest(context, **fields))`:

    from builder.build import build

    again = build("testdata/hello", tags=["hello"], root="/tmp/pb",
                  build_args={"BASE": "127.0.0.1:5000/busybox:latest"})
    assert again.executed_steps == 0  # everything came from the cache

Errors are PybuildErrors (builder.errors): a step that failed is a
`StepFailed` naming the step, its Dockerfile lines and the cause.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

from builder.export.assemble import ExportOptions
from builder.remotecache.control import CacheControl
from builder.context.dockerfile import read_dockerfile_at
from builder.errors import PybuildError, translated_errors
from builder.root.gc import auto_gc
from builder.root.lock import RootLock
from builder.image import Descriptor, Image
from cache.digest import Digest
from builder.export.layers import EarlyLayers, LayerMaker
from builder.export.outputs import OutputSpec, OutputType, parse_output
from builder.solver.progress import BuildReporter
from builder.registry.reference import Reference
from builder.solver.secrets import parse_secrets, parse_ssh
from builder.solver.session import BuildSession, SourceOptions, StepOptions
from builder.root.worker import Worker
from frontend.ops import NetworkMode, Platform
from builder.attest.record import platform_text
from builder.export.attest import PlatformRecord
from runtime.limits import Limits


@dataclass(frozen=True)
class BuildRequest:
    """Everything a build is given, by the CLI's flags and configuration or
    by a Python caller; the values are as the flags spell them."""

    context: str | os.PathLike  # a local directory (the CLI fetches a remote one first)

    # The Dockerfile and what it is given.
    dockerfile: str | os.PathLike | None = None  # default: CONTEXT/Dockerfile, shown as "Dockerfile"
    dockerfile_text: str | None = None  # its text when already read (stdin, a remote context)
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    platform: str | None = None  # os/arch[/variant]; default: this host's; several, comma-separated: an index
    build_contexts: Sequence[str] = ()  # NAME=DIR, NAME=docker-image://REF, NAME=oci-layout://PATH[:TAG][@DIGEST]

    # What RUN steps get.
    network: str = "host"  # host, none, or default (= host)
    secrets: Sequence[str] = ()  # id=ID,src=FILE|env=VAR
    ssh: Sequence[str] = ()  # default|ID=PATH
    add_hosts: Sequence[str] = ()  # HOST:IP
    memory: str | int | None = None  # 512m, 1g, or bytes
    cpus: float | str | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    pids_limit: int | None = None
    ulimits: Sequence[str] = ()  # nofile=1024:2048

    # The cache.
    no_cache: bool = False
    no_cache_filter: str | Sequence[str] = ()  # stages, or STAGE[,STAGE]
    explain: bool = False
    cache_to: Sequence[str] = ()
    cache_from: Sequence[str] = ()
    pull: bool = False

    # The image and where it goes.
    tags: Sequence[str] = ()
    outputs: Sequence[str | OutputSpec] = ()  # none: the local store
    push: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    squash: bool = False
    # Attestations, as `--attest` specs (type=provenance,mode=max / type=sbom):
    # none unless asked, as BuildKit; the CLI adds buildx's default min
    # provenance (builder.attest.options.cli_attest_specs).
    attest: Sequence[str] = ()
    # A remote context's origin for its provenance, as the CLI fetched it:
    # ("git", URL#ref:subdir, commit) or ("url", URL, digest).
    context_origin: tuple[str, ...] = ()
    # sign= key file -> its private key, read by the caller (the CLI asks
    # the password); a file not here is read with COSIGN_PASSWORD.
    signing_keys: Mapping[str, object] = field(default_factory=dict)

    # The root and the configuration (the CLI reads them from its config file).
    root: str | os.PathLike | None = None
    isolation: str | None = None  # builtin, oci or chroot; default: oci when runc/crun exists
    insecure_registries: Sequence[str] = ()
    registry_hosts: object = None  # builder.registry.hosts.RegistryHosts; None: the config file pybuild finds
    gc_policy: Sequence = ()  # the config file's [[gc.policy]] (builder.root.gc.gc_rules)
    size_limits: object = None  # builder.config.SizeLimits, the config file's [limits]; None: no cap

    def __post_init__(self):
        # Frozen all the way down: a list or dict the caller changes after
        # making the request does not change the request.
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif isinstance(value, dict):
                object.__setattr__(self, name, MappingProxyType(dict(value)))


@dataclass(frozen=True)
class BuildResult:
    image: Image
    tags: tuple[str, ...]
    cached_steps: int
    executed_steps: int
    duration: float
    pushed: Mapping[str, str] = field(default_factory=dict)  # tag -> manifest (or index) digest
    # Several platforms: the image index; `image` is then the first platform's.
    index: Descriptor | None = None

    @property
    def image_id(self) -> str:
        return str(self.image.config.digest)

    @property
    def manifest_digest(self) -> str:
        """The image's manifest digest, or its index's for several platforms."""
        return str((self.index or self.image.manifest).digest)


def parse_platform(text: str | None) -> Platform:
    """`--platform`, read as the Dockerfile frontend reads `FROM --platform`."""
    from frontend.platforms import parse_platform as parse

    if not text:
        return Platform()
    try:
        return parse(text)
    except ValueError as exc:
        raise PybuildError(f"invalid platform: {exc}") from None  # the message quotes the value


def _platforms(text: str) -> list[Platform]:
    """`--platform a,b`: each read as one `--platform`, each once, in order."""
    platforms: list[Platform] = []
    for part in text.split(","):
        if not part.strip():
            raise PybuildError(f"invalid platform: {text!r} has an empty entry")
        platform = parse_platform(part.strip())
        if platform not in platforms:
            platforms.append(platform)
    from builder.export.multi import platform_dir

    named: dict[str, Platform] = {}
    for platform in platforms:  # type=local/tar write each into its own directory
        other = named.setdefault(platform_dir(platform), platform)
        if other != platform:
            raise PybuildError(f"invalid platform: {other} and {platform} would share the output directory "
                               f"{platform_dir(platform)}")
    return platforms


def build(request: BuildRequest | str | os.PathLike | None = None, /, *,
          reporter: BuildReporter | None = None, observer=None, **fields) -> BuildResult:
    """Build what `request` asks. Given a context instead (or `context=` among
    the keywords, as before BuildRequest), the keyword `fields` make the
    request; given both, they replace its fields.
    `reporter` shows the progress (builder.solver.progress.make_reporter;
    default: nothing shown); `observer` (a builder.root.memo.Observer) is
    told what the build read. Raises PybuildError."""
    if request is None:
        request = BuildRequest(**fields)
    elif not isinstance(request, BuildRequest):
        request = BuildRequest(request, **fields)
    elif fields:
        request = replace(request, **fields)
    # The Python API's callers meet PybuildErrors only, as the CLI does.
    with translated_errors():
        return _build(request, reporter or BuildReporter(), observer)


def _build(request: BuildRequest, reporter: BuildReporter, observer) -> BuildResult:
    """One graph per target platform (builder/multiplatform.py), solved,
    assembled and written: one image, or several forming an index."""
    from contextlib import ExitStack

    from builder import multiplatform as plans
    from builder.context.inputs import parse_build_contexts

    started = time.monotonic()
    context_dir = Path(request.context)
    if not context_dir.is_dir():
        raise PybuildError(f"build context {request.context} is not a directory")
    dockerfile_path = Path(request.dockerfile) if request.dockerfile else context_dir / "Dockerfile"
    dockerfile_text = request.dockerfile_text
    if dockerfile_text is None:
        dockerfile_text = read_dockerfile_at(dockerfile_path)
    platforms = _platforms(request.platform) if request.platform else [Platform()]
    several = len(platforms) > 1
    specs = [o if isinstance(o, OutputSpec) else parse_output(o) for o in request.outputs]
    tags = tuple(str(Reference.parse(t)) for t in request.tags)
    network = request.network
    if network not in ("host", "none", "default"):
        raise PybuildError(f"invalid --network {network!r}: expected default, host or none")
    if several and any(spec.type is OutputType.DOCKER for spec in specs):
        from builder.export.multi import DOCKER_REFUSAL

        raise PybuildError(DOCKER_REFUSAL)
    limits = _limits(request)
    attest = _attestations(request, specs, tags, _epoch(request.build_args))
    from builder.export.sign import sign_pushed, signing_keys

    keys = signing_keys(specs, request.signing_keys)  # a wrong password fails before the build
    named_contexts = parse_build_contexts(request.build_contexts)
    extra_hosts = parse_add_hosts(request.add_hosts)

    def cache_control() -> CacheControl:  # each graph its own: it keeps the graph's forced steps
        return CacheControl.parse(no_cache=request.no_cache, no_cache_filter=request.no_cache_filter,
                                  explain=request.explain, cache_to=request.cache_to,
                                  cache_from=request.cache_from)

    cache_control()  # a bad --cache-to is reported before the root is opened
    build_args, target = dict(request.build_args or {}), request.target
    defaults = ExportOptions(labels=tuple((request.labels or {}).items()),
                             annotations=tuple((request.annotations or {}).items()),
                             source_date_epoch=_epoch(build_args), squash=request.squash)
    # absolute from here on, as the CLI's (builder.config.resolve)
    worker = Worker.open(Path(os.path.abspath(request.root)) if request.root else None, request.isolation)
    if attest is not None:
        attest.worker = worker
        if observer is not None and attest.explicit:
            observer.refuse("an attestation is made afresh by every build")
    lease = RootLock(worker.root, exclusive=False)  # prune waits for running builds
    try:
        with ExitStack() as held:
            planned, facts = [], []
            for platform in platforms:
                record = None
                if attest is not None:
                    record = _record(request, dockerfile_text, dockerfile_path, build_args)
                    facts.append(PlatformRecord(record, platform_text(platform)))
                session = BuildSession.open(
                    worker, reporter,
                    SourceOptions(context_dir, dockerfile_path, platform, named_contexts, pull=request.pull,
                                  insecure_registries=tuple(request.insecure_registries),
                                  registry_hosts=request.registry_hosts),
                    StepOptions(NetworkMode(network), parse_secrets(request.secrets), limits=limits,
                                size_limits=request.size_limits),
                    parse_ssh(request.ssh), observer, record)
                held.callback(session.close)
                planned.append(plans.convert(
                    session, platform, cache_control(), dockerfile_text,
                    path=dockerfile_path.name if request.dockerfile is None else str(request.dockerfile),
                    build_args=build_args, target=target, explicit_platform=bool(request.platform),
                    extra_hosts=extra_hosts, named=several))
            plans.name_shared(planned)
            reporter.set_names({v: meta for plan in planned for v, meta in plan.definition.metadata.items()})
            plans.show_warnings(planned, reporter)
            layers = LayerMaker(worker.store, worker.index, worker.snapshots)
            # The default output of one platform is the local store: its
            # layers are known (uncompressed, mtimes as they are) before the
            # last step ends.
            early = None
            if not several and not specs:
                early = EarlyLayers(layers, _lineage(planned[0].definition))
                held.callback(early.close)  # first, on failure: stops a layer still being made
            shown = plans.ShownOnce(reporter) if several else reporter
            for plan in planned:
                plan.solver_for(worker, shown, early.step_done if early else None)
            plans.solve(planned)
            for plan, found in zip(planned, facts):
                found.record.observe_graph(plan.definition)
                found.record.finish()
                if attest.options.sbom is not None and attest.options.sbom.scan_stage:
                    from builder.export.attest import stage_layers

                    found.stages = stage_layers(plan.definition, plan.solution, plan.session.results)
            for plan in planned:
                plan.control.after_solve(plan.definition, plan.session, plan.solution, reporter, build_args, target,
                                         platform=str(plan.platform) if several else None)
            if observer is not None:
                _observe_solutions(observer, planned, reporter)
            # One image per output's export options (builder.export.run).
            built = [plans.assembled(plan, worker, layers, defaults) for plan in planned]
            index = None
            if several:
                from builder.export.multi import run_platform_outputs

                index, image, pushed = run_platform_outputs(built, tags, specs, request.push, attest, facts)
                images = [b.assembler.image() for b in built]
                if observer is not None:
                    _observe_index(observer, worker.store, index)
            else:
                image, pushed, index = planned[0].session.export(built[0].assembler, built[0].chain, tags, specs,
                                                                 request.push, attest, facts[0] if facts else None)
                images = [image]
            sign_pushed(worker, specs, tags, pushed, keys, hosts=request.registry_hosts,
                        insecure=request.insecure_registries, reporter=reporter)
            planned[0].control.export(planned[0].session, worker,
                                      [(plan.solution, plan.definition, made) for plan, made in zip(planned, images)],
                                      reporter)
        lease.release()
        auto_gc(worker, reporter, request.gc_policy)
    finally:
        lease.release()
        worker.close()
    return BuildResult(image, tags, sum(b.cached for b in built), sum(b.executed for b in built),
                       time.monotonic() - started, pushed, index=index)


def _attestations(request: BuildRequest, specs, tags, epoch: int | None):
    """The build's BuildAttestations (its worker set once the root is
    open), or None when no output gets one (buildx's default provenance on
    a build to the local store alone: then nothing is recorded, and the
    checkout's git state is not read); checked before the build."""
    from builder.attest.options import parse_attest_specs
    from builder.export.attest import BuildAttestations
    from builder.export.run import output_specs

    options = parse_attest_specs(request.attest)
    if not options.any:
        return None
    if options.sbom is not None and options.sbom.generator:
        raise PybuildError(f"sbom generator={options.sbom.generator}: pybuild scans the image itself and runs "
                           "no scanner image (docs/attestations.md)")
    attest = BuildAttestations(options, None, epoch)
    attest.check_outputs(specs)
    if not any(attest.wanted(spec).any for spec in output_specs(specs, tags, request.push)):
        return None
    return attest


def _record(request: BuildRequest, dockerfile_text: str, dockerfile_path: Path, build_args):
    """One platform's BuildRecord: the frontend's arguments as buildx sends
    them (SOURCE_DATE_EPOCH from the environment among the build args), the
    context's origin, or the checkout a local context lives in."""
    from builder.attest.record import BuildRecord, frontend_args, platform_text
    from builder.attest.vcs import local_vcs

    args = dict(build_args)
    if os.environ.get("SOURCE_DATE_EPOCH") and "SOURCE_DATE_EPOCH" not in args:
        args["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    record = BuildRecord(
        dockerfile=dockerfile_text.encode(),
        dockerfile_name=dockerfile_path.name if request.dockerfile is None else Path(request.dockerfile).name,
        args=frontend_args(build_args=args, target=request.target, labels=request.labels or {},
                           network="none" if request.network == "none" else None, no_cache=request.no_cache,
                           add_hosts=parse_add_hosts(request.add_hosts)),
        builder_platform=platform_text(Platform()))
    kind, *origin = request.context_origin or ("",)
    if kind == "git":
        record.set_git_context(*origin)
    elif kind == "url":
        record.set_url_context(*origin)
    else:
        record.set_vcs(local_vcs(request.context, dockerfile_path.parent))
    return record


def _lineage(definition) -> set[str]:
    """The target's own steps: each op's inputs[0] is the filesystem it
    builds on, down to the stage's source."""
    chain, vertex = set(), definition.target
    while True:
        chain.add(vertex)
        inputs = definition.op(vertex).inputs
        if not inputs:
            return chain
        vertex = inputs[0]


def _observe_solutions(observer, planned, reporter) -> None:
    """What a replay checks and shows: each platform's target result, and
    the steps in a fixed order: those every platform's graph has first (a
    build for several solves them first), then each platform's own."""
    from frontend import ops

    solutions = [plan.solution for plan in planned]
    observer.targets = [s.keys[plan.definition.target] for plan, s in zip(planned, solutions)]
    everyone = set.intersection(*(set(s.keys) for s in solutions))
    order = [v for v in solutions[0].keys if v in everyone]
    order += [v for s in solutions for v in s.keys if v not in everyone]
    observer.steps = [[vertex, reporter.name_of(vertex)] for vertex in dict.fromkeys(order)]
    for plan, solution in zip(planned, solutions):
        if any(isinstance(plan.definition.op(v), (ops.HttpSource, ops.GitSource)) for v in solution.keys):
            observer.refuse()  # BuildKit asks the remote again on every build


def _observe_index(observer, store, index: Descriptor) -> None:
    """A replay answers with the index: each platform's manifest and
    config must still be in the store, as the full build would make them."""
    for entry in store.read_json(index.digest)["manifests"]:
        observer.blobs.add(entry["digest"])
        observer.blobs.add(store.read_json(Digest.parse(entry["digest"]))["config"]["digest"])


def parse_add_hosts(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--add-host HOST:IP` (or HOST=IP, as docker also takes it; an IPv6
    address may be bracketed) as (host, ip) pairs, in the order given."""
    import ipaddress

    hosts = []
    for value in values:
        host, sep, ip = value.partition("=")
        if not sep:
            host, sep, ip = value.partition(":")
        ip = ip.removeprefix("[").removesuffix("]")
        if not sep or not host or not ip or any(c.isspace() for c in host):
            raise PybuildError(f"invalid --add-host {value!r}: expected HOST:IP")
        if ip == "host-gateway":
            raise PybuildError(f"invalid --add-host {value!r}: host-gateway is the docker daemon's own "
                               "address and pybuild has no daemon; give the IP address")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise PybuildError(f"invalid --add-host {value!r}: {ip!r} is not an IP address") from None
        hosts.append((host, ip))
    return tuple(hosts)


def _limits(request: BuildRequest) -> Limits | None:
    """RUN's resource limits (docker build's --memory, --cpus...), or None."""
    from runtime.limits import LimitError, cpus_to_quota, parse_memory, parse_ulimit

    memory, cpus, cpu_quota, cpu_period = request.memory, request.cpus, request.cpu_quota, request.cpu_period
    try:
        if cpus is not None:
            if cpu_quota is not None:
                raise LimitError("--cpus and --cpu-quota cannot be used together")
            cpu_quota, cpu_period = cpus_to_quota(cpus)
        limits = Limits(memory=parse_memory(memory) if memory is not None else None, cpu_quota=cpu_quota,
                        cpu_period=cpu_period, pids=request.pids_limit,
                        ulimits=tuple(parse_ulimit(u) for u in request.ulimits))
    except LimitError as exc:
        raise PybuildError(str(exc)) from None
    return limits or None


def _epoch(build_args) -> int | None:
    value = (build_args or {}).get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise PybuildError(f"invalid SOURCE_DATE_EPOCH {value!r}: expected seconds since 1970") from None
