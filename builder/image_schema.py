"""Type checks of the JSON documents an image is made of — image config,
manifest, index — as the OCI image spec declares their fields.

Every such document from outside (a registry, an OCI layout, the store)
goes through one of `check_config`, `check_manifest` or `check_index`
before pybuild reads a field of it, so code further on can trust that
`Env` is a list of strings and `rootfs.diff_ids` a list of digests. A
wrong type is refused, as BuildKit's Go decoder refuses it ("cannot
unmarshal number into Go struct field"); `null` is accepted anywhere, as
Go decodes it to the field's zero value. Field names match
case-insensitively, as Go's decoder (and frontend.image_config) matches them.

The checks raise `SchemaError`, whose message names the field
(`config.Env[0] must be a string`); callers add which image it was, in
their own error class.
"""

from __future__ import annotations

from typing import Callable, Mapping

from cache.digest import Digest
from cache.errors import InvalidDigest


class SchemaError(ValueError):
    """A document whose field has the wrong type; the message names it."""


Check = Callable[[object, str], None]


def _string(value, where: str) -> None:
    if not isinstance(value, str):
        raise SchemaError(f"{where} must be a string")


def _boolean(value, where: str) -> None:
    if not isinstance(value, bool):
        raise SchemaError(f"{where} must be a boolean")


def _integer(value, where: str) -> None:
    # bool is an int to Python, never to Go.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{where} must be an integer")


def _size(value, where: str) -> None:
    _integer(value, where)
    if value < 0:
        raise SchemaError(f"{where} must not be negative")


def _digest(value, where: str) -> None:
    _string(value, where)
    try:
        Digest.parse(value)
    except InvalidDigest:
        raise SchemaError(f"{where} is not a valid digest: {value!r}") from None


def _list_of(item: Check) -> Check:
    def check(value, where: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(f"{where} must be a list")
        for n, element in enumerate(value):
            if element is not None:
                item(element, f"{where}[{n}]")
    return check


def _map_of(item: Check) -> Check:
    def check(value, where: str) -> None:
        if not isinstance(value, Mapping):
            raise SchemaError(f"{where} must be an object")
        for key, element in value.items():
            if element is not None:
                item(element, f"{where}[{key!r}]")
    return check


def _object(fields: Mapping[str, Check]) -> Check:
    """An object whose known fields have these types; unknown ones are
    ignored (the spec lets documents carry extensions)."""
    by_lower = {name.lower(): check for name, check in fields.items()}

    def check(value, where: str) -> None:
        if not isinstance(value, Mapping):
            raise SchemaError(f"{where} must be an object")
        for key, element in value.items():
            field = by_lower.get(key.lower()) if isinstance(key, str) else None
            if field is not None and element is not None:
                field(element, f"{where}.{key}" if where else key)
    return check


_strings = _list_of(_string)
_string_map = _map_of(_string)
# ExposedPorts and Volumes are Go's map[string]struct{}: the values are
# empty objects (their members ignored), anything else fails to decode.
_set = _map_of(_object({}))

_HEALTHCHECK = _object({
    "Test": _strings, "Interval": _integer, "Timeout": _integer, "StartPeriod": _integer,
    "StartInterval": _integer, "Retries": _integer,
})

_CONTAINER_CONFIG = _object({
    "User": _string, "ExposedPorts": _set, "Env": _strings, "Entrypoint": _strings, "Cmd": _strings,
    "Volumes": _set, "WorkingDir": _string, "Labels": _string_map, "StopSignal": _string,
    "ArgsEscaped": _boolean, "Healthcheck": _HEALTHCHECK, "OnBuild": _strings, "Shell": _strings,
})


_ROOTFS_FIELDS = _object({"type": _string, "diff_ids": _list_of(_digest)})


def _rootfs(value, where: str) -> None:
    _ROOTFS_FIELDS(value, where)
    if value.get("type") != "layers":
        raise SchemaError(f'{where}.type must be "layers"')
    if not isinstance(value.get("diff_ids"), list):
        raise SchemaError(f"{where}.diff_ids is missing")


_HISTORY = _object({
    "created": _string, "created_by": _string, "author": _string, "comment": _string, "empty_layer": _boolean,
})

_CONFIG = _object({
    "created": _string, "author": _string, "architecture": _string, "os": _string, "os.version": _string,
    "os.features": _strings, "variant": _string, "config": _CONTAINER_CONFIG, "rootfs": _rootfs,
    "history": _list_of(_HISTORY),
})

_PLATFORM = _object({
    "architecture": _string, "os": _string, "os.version": _string, "os.features": _strings, "variant": _string,
})

_DESCRIPTOR_FIELDS = _object({
    "mediaType": _string, "digest": _digest, "size": _size, "urls": _strings, "annotations": _string_map,
    "platform": _PLATFORM, "artifactType": _string,
})


def _descriptor(*required: str) -> Check:
    def check(value, where: str) -> None:
        _DESCRIPTOR_FIELDS(value, where)
        for name in required:
            if value.get(name) is None:
                raise SchemaError(f"{where}.{name} is missing")
    return check


# An index entry without a mediaType is taken for an image manifest
# (builder.registry.platforms.select_platform); a manifest's blobs need theirs.
_BLOB = _descriptor("mediaType", "digest", "size")
_ENTRY = _descriptor("digest", "size")

_MANIFEST = _object({
    "schemaVersion": _integer, "mediaType": _string, "config": _BLOB, "layers": _list_of(_BLOB),
    "annotations": _string_map, "subject": _ENTRY,
})

_INDEX = _object({
    "schemaVersion": _integer, "mediaType": _string, "manifests": _list_of(_ENTRY),
    "annotations": _string_map, "subject": _ENTRY,
})


def _no_lone_surrogates(value, where: str) -> None:
    """JSON may escape half a UTF-16 pair (`"\\ud800"`), which Python keeps
    as a string that cannot be written as UTF-8; Go's decoder replaces it.
    Refusing it keeps every string pybuild hashes or writes encodable."""
    todo = [(value, where)]
    while todo:
        item, path = todo.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise SchemaError(f"{path or 'a string'} is not valid UTF-8") from None
        elif isinstance(item, Mapping):
            for key, element in item.items():
                inner = f"{path}.{key}" if path else str(key)
                try:
                    str(key).encode()
                except UnicodeEncodeError:
                    raise SchemaError(f"a key of {path or 'the document'} is not valid UTF-8") from None
                todo.append((element, inner))
        elif isinstance(item, list):
            todo.extend((element, f"{path}[{n}]") for n, element in enumerate(item))


def _checked(schema: Check, body, what: str) -> None:
    if not isinstance(body, Mapping):
        raise SchemaError(f"{what} must be a JSON object")
    _no_lone_surrogates(body, "")
    schema(body, "")


def check_config(body) -> None:
    """An image config (OCI config.md, with Docker's Healthcheck, OnBuild, Shell)."""
    _checked(_CONFIG, body, "the config")
    if body.get("rootfs") is None:
        raise SchemaError("rootfs is missing")


def check_manifest(body) -> None:
    """An image manifest (OCI manifest.md, Docker schema 2)."""
    _checked(_MANIFEST, body, "the manifest")
    if body.get("config") is None:
        raise SchemaError("config is missing")


def check_index(body) -> None:
    """An image index or Docker manifest list (OCI image-index.md)."""
    _checked(_INDEX, body, "the index")
