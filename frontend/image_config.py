"""The image config JSON of a stage, shaped as BuildKit reads and writes
it: what a base image passes on (as Go's decoder would read it into
DockerOCIImage), the config of an empty stage, and Go's `omitempty` when
the result is marshalled."""

from __future__ import annotations

import copy
import json
from typing import Mapping

from frontend.definition import HistoryEntry
from frontend.ops import Platform
from frontend.stage_state import DEFAULT_PATH

# Top-level fields of an image config that an image built on it keeps
# (BuildKit decodes into DockerOCIImage, which drops the others).
_KEPT_FIELDS = ("author", "architecture", "os", "os.version", "os.features", "variant")
# The `config` fields of DockerOCIImageConfig (OCI ImageConfig plus Docker's
# Healthcheck, OnBuild, Shell). A base image made by the classic builder
# also carries Hostname, Image, AttachStdin...; BuildKit's decoder drops them.
_CONFIG_FIELDS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                  "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell")
_HEALTHCHECK_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


def config_section(config: Mapping) -> Mapping:
    """The `config` object of an image config, or {} when it has none."""
    section = config.get("config") if isinstance(config, Mapping) else None
    return section if isinstance(section, Mapping) else {}


def has_no_layers(config: Mapping) -> bool:
    """True for an image with a rootfs but no layer (every history entry
    empty): a stage built on it starts from scratch."""
    rootfs = config.get("rootfs")
    if isinstance(rootfs, Mapping) and rootfs.get("diff_ids"):
        return False
    history = config.get("history") or []
    return bool(isinstance(rootfs, Mapping)) and all(
        isinstance(h, Mapping) and h.get("empty_layer") for h in history
    )


def empty_config(platform: Platform) -> dict:
    """The config of a stage FROM scratch (or a local named context)."""
    image: dict = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        image["variant"] = platform.variant
    image["config"] = {"Env": ["PATH=" + DEFAULT_PATH], "WorkingDir": "/"}
    return image


def base_config(config: Mapping, platform: Platform) -> dict:
    """What a stage inherits from its base image's config: the fields Go's
    decoder keeps, ONBUILD triggers left out (this build consumes them)."""
    plain = json.loads(json.dumps(config, default=_json_default))
    image: dict = {k: plain[k] for k in _KEPT_FIELDS if k in plain}
    image.setdefault("architecture", platform.architecture)
    image.setdefault("os", platform.os)
    section = plain.get("config")
    section = _go_fields(section, _CONFIG_FIELDS) if isinstance(section, dict) else {}
    for key in ("ExposedPorts", "Volumes"):  # map[string]struct{}: only the keys survive
        if isinstance(section.get(key), dict):
            section[key] = {name: {} for name in section[key]}
    if isinstance(section.get("Healthcheck"), dict):
        section["Healthcheck"] = _go_fields(section["Healthcheck"], _HEALTHCHECK_FIELDS)
    section.pop("OnBuild", None)  # consumed by this build, not inherited
    image["config"] = section
    return omit_empty(image)


def base_history(config: Mapping) -> list[HistoryEntry]:
    """The history entries of a base image, which the stage's history
    starts with (entries that are not objects are dropped)."""
    return [
        HistoryEntry(
            created_by=str(h.get("created_by", "")),
            empty_layer=bool(h.get("empty_layer", False)),
            comment=str(h.get("comment", "")),
        )
        for h in (config.get("history") or [])
        if isinstance(h, Mapping)
    ]


def omit_empty(image: Mapping) -> dict:
    """An image config as BuildKit marshals it: every field of the config
    section, its Healthcheck and the platform fields is `omitempty`, so an
    empty `CMD []`, an `ENTRYPOINT []` or a null inherited from a base image
    is left out rather than written as [] or null."""
    out = copy.deepcopy(dict(image))
    section = out.get("config")
    if isinstance(section, dict):
        health = section.get("Healthcheck")
        if isinstance(health, dict):
            section["Healthcheck"] = {k: v for k, v in health.items() if not _is_empty(v)}
        # Healthcheck is a pointer: only a missing one is omitted, {} stays.
        out["config"] = {k: v for k, v in section.items()
                         if (v is not None if k == "Healthcheck" else not _is_empty(v))}
    for key in ("author", "os.version", "os.features", "variant"):
        if key in out and _is_empty(out[key]):
            del out[key]
    return out


def set_platform(image: dict, platform: Platform) -> None:
    """BuildKit's finalizeResultImage for an explicit --platform: the image
    says the requested os/architecture whatever its last base said; the
    variant is replaced when one was asked for or the os/arch changed."""
    same = image.get("os") == platform.os and image.get("architecture") == platform.architecture
    image["os"], image["architecture"] = platform.os, platform.architecture
    if platform.variant or not same:
        image.pop("variant", None)
        if platform.variant:
            image["variant"] = platform.variant
    if not same:
        image.pop("os.version", None)


def set_env(env_list: list[str], key: str, value: str) -> None:
    """Set `key` in a config's `Env` list, in place of an earlier value."""
    for i, entry in enumerate(env_list):
        if entry.split("=", 1)[0] == key:
            env_list[i] = f"{key}={value}"
            return
    env_list.append(f"{key}={value}")


def _go_fields(section: Mapping, names: tuple[str, ...]) -> dict:
    """The members of a JSON object that Go's decoder maps onto a struct
    with these field names: matched case-insensitively, the last one wins."""
    by_lower = {name.lower(): name for name in names}
    fields: dict = {}
    for key, value in section.items():
        name = key if key in names else by_lower.get(str(key).lower())
        if name is not None:
            fields[name] = value
    return fields


def _is_empty(value) -> bool:
    """Go's omitempty test: false, 0, "", nil and empty slices and maps."""
    if value is None or isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, (str, list, tuple, dict)) and not value


def _json_default(value):
    # A resolver may hand over read-only mappings and tuples: JSON as lists and objects.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
