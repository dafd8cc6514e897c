"""SLSA provenance predicates (v0.2 and v1) and their in-toto statements,
in the shape BuildKit writes them (solver/llbsolver/provenance), from a
builder.attest.record.BuildRecord.

Measured against docker 26 (BuildKit 0.13), v0.2:
- builder.id is "" unless `builder-id=` is given; buildType
  https://mobyproject.org/buildkit@v1; environment.platform is the
  builder's platform, not the image's.
- A local context leaves configSource with entryPoint only and lists
  locals "context" and "dockerfile"; materials are then incomplete. A git
  context gives configSource {uri: URL#ref, digest: {sha1: commit}}, the
  same git material, and complete materials.
- min keeps the args that are not build-arg:/label: (dropping one makes
  completeness.parameters false) and no secrets or ssh; max adds them (ids
  only) and buildConfig.
- Timestamps are the build's own, RFC 3339 with nanoseconds; BuildKit 0.13
  ignores SOURCE_DATE_EPOCH there (it shows up as build-arg:SOURCE_DATE_EPOCH).

Where pybuild differs, on purpose (docs/ to say so): with
SOURCE_DATE_EPOCH both timestamps are that time and the invocation id is
derived from the build's inputs, so that a reproducible build gives the
same provenance bytes (and attestation and index digests); a local context's configSource
carries the Dockerfile's sha256 (BuildKit names no digest for it);
buildConfig lists pybuild's own ops (their canonical form, type tags
`pybuild.*`), not LLB, and the source map holds the Dockerfile text alone.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import Iterable

from builder.attest.intoto import statement
from builder.attest.options import ProvenanceMode, ProvenanceOptions, SlsaVersion
from builder.attest.purl import image_purl
from builder.attest.record import BuildRecord, _redact
from builder.image import canonical_json
from cache.digest import Digest

PREDICATE_V0_2 = "https://slsa.dev/provenance/v0.2"
PREDICATE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE_V0_2 = "https://mobyproject.org/buildkit@v1"
BUILD_TYPE_V1 = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
METADATA_KEY = "https://mobyproject.org/buildkit@v1#metadata"
HERMETIC_KEY = "https://mobyproject.org/buildkit@v1#hermetic"
_MIN_DROPPED = ("build-arg:", "label:")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def predicate_type(options: ProvenanceOptions) -> str:
    return PREDICATE_V1 if options.version is SlsaVersion.V1 else PREDICATE_V0_2


def provenance_predicate(record: BuildRecord, options: ProvenanceOptions, *, epoch: int | None = None) -> dict:
    """The predicate of `options.version`. `epoch` (SOURCE_DATE_EPOCH)
    replaces both timestamps."""
    body = _v0_2(record, options, epoch)
    return _to_v1(body) if options.version is SlsaVersion.V1 else body


def provenance_statement(record: BuildRecord, options: ProvenanceOptions, *, names: Iterable[str],
                         manifest: Digest, platform: str, epoch: int | None = None) -> bytes:
    """The in-toto statement about one platform's image manifest, named
    once per image name (BuildKit: one subject a tag; none without a name)."""
    return statement(predicate_type(options), provenance_predicate(record, options, epoch=epoch),
                     subjects(names, manifest, platform))


def subjects(names: Iterable[str], manifest: Digest, platform: str) -> list[dict]:
    return [{"name": image_purl(name, platform), "digest": {manifest.algorithm: manifest.hex}} for name in names]


# -- SLSA v0.2 ---------------------------------------------------------------------------
def _v0_2(record: BuildRecord, options: ProvenanceOptions, epoch: int | None) -> dict:
    maximal = options.mode is ProvenanceMode.MAX
    args = dict(record.args)
    parameters_complete = True
    if not maximal:
        kept = {k: v for k, v in args.items() if not k.startswith(_MIN_DROPPED)}
        parameters_complete = len(kept) == len(args)
        args = kept
    parameters: dict = {"frontend": record.frontend}
    if args:
        parameters["args"] = args
    if maximal and record.secrets:
        parameters["secrets"] = [_use(record.secrets[k]) for k in sorted(record.secrets)]
    if maximal and record.ssh:
        parameters["ssh"] = [_use(record.ssh[k]) for k in sorted(record.ssh)]
    if record.locals:
        parameters["locals"] = [{"name": name} for name in sorted(record.locals)]
    body: dict = {"builder": {"id": options.builder_id}, "buildType": BUILD_TYPE_V0_2}
    materials = _materials(record)
    if materials:
        body["materials"] = materials
    body["invocation"] = {"configSource": _config_source(record), "parameters": parameters,
                          "environment": {"platform": record.builder_platform}}
    buildkit: dict = {}
    if record.vcs:
        buildkit["vcs"] = dict(sorted(record.vcs.items()))
    if maximal:
        config, locations = _build_config(record)
        body["buildConfig"] = config
        buildkit["source"] = {"locations": locations, "infos": [_source_info(record)]}
    complete = record.materials_complete
    started, finished, invocation = record.started_ns, record.finished_ns, record.invocation_id
    if epoch is not None:
        started = finished = epoch * 1_000_000_000
        invocation = _reproducible_id(body, buildkit, epoch)
    metadata: dict = {"buildInvocationID": invocation, "buildStartedOn": _time(started)}
    if finished is not None:
        metadata["buildFinishedOn"] = _time(finished)
    metadata.update({
        "completeness": {"parameters": parameters_complete, "environment": True, "materials": complete},
        "reproducible": options.reproducible,
        METADATA_KEY: buildkit,
    })
    if complete and not record.network_access:
        metadata[HERMETIC_KEY] = True
    body["metadata"] = metadata
    return body


def _use(use) -> dict:
    return {"id": use.id, "optional": True} if use.optional else {"id": use.id}


def _materials(record: BuildRecord) -> list[dict]:
    found = [{"uri": image_purl(m.ref, m.platform), "digest": {m.digest.algorithm: m.digest.hex}}
             for m in record.sorted_images()]
    found += [{"uri": m.url, "digest": {"sha1": m.commit}} for m in record.sorted_git()]
    found += [{"uri": m.url, "digest": {m.digest.algorithm: m.digest.hex}} for m in record.sorted_http()]
    return found


def _config_source(record: BuildRecord) -> dict:
    source = record.config_source
    body: dict = {}
    if source.uri:
        body["uri"] = source.uri
        body["digest"] = dict(source.digest)
    else:
        body["digest"] = {"sha256": record.dockerfile_digest.hex}
    if source.entry_point:
        body["entryPoint"] = source.entry_point
    return body


def _build_config(record: BuildRecord) -> tuple[dict, dict]:
    """pybuild's ops as BuildKit's llbDefinition steps (`stepN`, inputs as
    `stepK:0`), the vertex ids mapped to them, and each step's Dockerfile lines."""
    from frontend.ops import GitSource, HttpSource

    step_of = {vertex: f"step{n}" for n, (vertex, _, _) in enumerate(record.steps)}
    steps, locations, shown = [], {}, {}
    for vertex, op, location in record.steps:
        body = {key: value for key, value in op.canonical().items() if key != "inputs"}
        # The materials name these URLs without their password; so must the steps.
        if isinstance(op, HttpSource):
            body["url"] = _redact(op.url)
        elif isinstance(op, GitSource):
            body["remote"] = _redact(op.remote)
        step: dict = {"id": step_of[vertex], "op": body}
        if op.inputs:
            step["inputs"] = [f"{step_of[source]}:0" for source in op.inputs]
        steps.append(step)
        # A vertex id hashes the op as written, password included (and so,
        # through its inputs, every step after it): the mapping names each
        # step by a digest of what the document shows instead.
        shown[vertex] = "sha256:" + hashlib.sha256(canonical_json(
            [body, [shown.get(source, "") for source in op.inputs]])).hexdigest()
        if isinstance(op, (HttpSource, GitSource)):
            # docker 26 maps an ADD's URL or git source to no lines (the copy has them).
            locations[step_of[vertex]] = {}
        elif location is not None:
            ranges = [{"start": {"line": location.start}, "end": {"line": location.end}}]
            locations[step_of[vertex]] = {"locations": [{"ranges": ranges}]}
    return {"llbDefinition": steps, "digestMapping": {shown[v]: s for v, s in step_of.items()}}, locations


def _source_info(record: BuildRecord) -> dict:
    return {"filename": record.config_source.entry_point or "Dockerfile", "language": "Dockerfile",
            "data": base64.b64encode(record.dockerfile).decode("ascii")}


def _reproducible_id(body: dict, buildkit: dict, epoch: int) -> str:
    """Under SOURCE_DATE_EPOCH, an invocation id that the build's inputs
    decide (25 base-36 characters, as BuildKit's random ones), so that the
    same build gives the same provenance, attestation and index digests.
    Only what the predicate shows goes in: min mode's hidden build args
    cannot be guessed back from the id."""
    number = int.from_bytes(hashlib.sha256(canonical_json([body, buildkit, epoch])).digest(), "big")
    characters = []
    for _ in range(25):
        number, rest = divmod(number, 36)
        characters.append(_BASE36[rest])
    return "".join(characters)


def _time(ns: int) -> str:
    """Go's RFC3339Nano: UTC, the fraction's trailing zeros dropped."""
    whole, nanos = divmod(ns, 1_000_000_000)
    text = datetime.datetime.fromtimestamp(whole, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


# -- SLSA v1 -----------------------------------------------------------------------------
def _to_v1(old: dict) -> dict:
    """BuildKit's ConvertToSLSA1: the same facts under v1's names."""
    invocation, meta = old["invocation"], old["metadata"]
    source = invocation["configSource"]
    config_source = {key: source[key] for key in ("uri", "digest") if key in source}
    if "entryPoint" in source:
        config_source["path"] = source["entryPoint"]
    internal: dict = {"builderPlatform": invocation["environment"]["platform"]}
    if "buildConfig" in old:
        internal["buildConfig"] = old["buildConfig"]
    definition: dict = {
        "buildType": BUILD_TYPE_V1,
        "externalParameters": {"configSource": config_source, "request": invocation["parameters"]},
        "internalParameters": internal,
    }
    if "materials" in old:
        definition["resolvedDependencies"] = old["materials"]
    completeness = meta["completeness"]
    metadata: dict = {"invocationID": meta["buildInvocationID"], "startedOn": meta["buildStartedOn"]}
    if "buildFinishedOn" in meta:
        metadata["finishedOn"] = meta["buildFinishedOn"]
    metadata["buildkit_metadata"] = meta[METADATA_KEY]
    if meta.get(HERMETIC_KEY):
        metadata["buildkit_hermetic"] = True
    metadata["buildkit_completeness"] = {"request": completeness["parameters"],
                                         "resolvedDependencies": completeness["materials"]}
    if meta["reproducible"]:
        metadata["buildkit_reproducible"] = True
    return {"buildDefinition": definition, "runDetails": {"builder": dict(old["builder"]), "metadata": metadata}}
