"""pybuild's configuration file, and how flags, environment and file combine.

The file is TOML, looked for in this order (the first that exists wins,
files are not merged):

    --config FILE, $PYBUILD_CONFIG
    $XDG_CONFIG_HOME/pybuild/config.toml   (~/.config/pybuild/config.toml)
    /etc/pybuild/config.toml

    root = "/var/lib/pybuild"
    isolation = "oci"            # builtin | oci
    progress = "plain"           # auto | plain | tty | quiet | rawjson

    [registry."docker.io"]
    mirrors = ["mirror.gcr.io"]
    [registry."registry.internal:5000"]
    insecure = true              # plain HTTP, like --insecure-registry

    [[gc.policy]]                # automatic GC after a build (builder.root.gc.gc_rules)
    keep_storage = "10GB"
    keep_duration = "48h"
    filters = ["type==exec.cachemount"]
    all = false

    [limits]                     # sizes of what a build downloads (default: none, as docker)
    max_layer_size = "20GiB"     # a base image layer, compressed or uncompressed
    max_add_url_size = "1GiB"    # the file an `ADD <url>` downloads

The names follow buildkitd.toml where there is one (`[registry."host"]`
with `mirrors`, `[[...gcpolicy]]` with `keepBytes`/`keepDuration`), in
snake case as the rest of this file.

Precedence for every setting is flag > environment variable > file >
built-in default (`resolve`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Mapping

from builder.errors import PybuildError

SYSTEM_CONFIG = Path("/etc/pybuild/config.toml")
ENV_CONFIG = "PYBUILD_CONFIG"
ENV_ROOT = "PYBUILD_ROOT"
ENV_PROGRESS = "PYBUILD_PROGRESS"


class Isolation(str, Enum):
    BUILTIN = "builtin"
    OCI = "oci"
    CHROOT = "chroot"


class ProgressMode(str, Enum):
    AUTO = "auto"
    PLAIN = "plain"
    TTY = "tty"
    QUIET = "quiet"
    RAWJSON = "rawjson"


class ConfigError(PybuildError):
    """A configuration file that cannot be read or holds a bad value."""


@dataclass(frozen=True)
class RegistryConfig:
    host: str
    mirrors: tuple[str, ...] = ()
    insecure: bool = False
    ca: str | None = None  # CA bundle (PEM) trusted for this registry's HTTPS


@dataclass(frozen=True)
class GCPolicy:
    keep_storage: int | None = None  # bytes
    keep_duration: float | None = None  # seconds
    filters: tuple[str, ...] = ()
    all: bool = False


@dataclass(frozen=True)
class SizeLimits:
    """`[limits]`: caps on what a build downloads, in bytes (None: no cap).

    `max_layer_size` refuses a base image or imported cache layer whose
    blob is larger (before it is downloaded) or whose tar is (while it is
    extracted); `max_add_url_size` an `ADD <url>` download."""

    max_layer_size: int | None = None
    max_add_url_size: int | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None = None  # the file read, None when there was none
    root: Path | None = None
    isolation: Isolation | None = None
    progress: ProgressMode | None = None
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict)
    gc_policy: tuple[GCPolicy, ...] = ()
    limits: SizeLimits = SizeLimits()

    @property
    def insecure_registries(self) -> tuple[str, ...]:
        return tuple(host for host, reg in sorted(self.registries.items()) if reg.insecure)


@dataclass(frozen=True)
class Settings:
    """What a command uses once flags, environment and file are combined."""

    config: Config
    root: Path | None  # None: the worker's default (/var/lib/pybuild for root)
    isolation: str | None  # None: the best available
    progress: ProgressMode
    insecure_registries: tuple[str, ...]

    @property
    def registry_hosts(self):
        """The registry client's per-host settings: this config file's
        mirrors and CA bundles, and every plain-HTTP host (flags included)."""
        # Imported when used: the no-op memo's replay reads the settings, never a registry.
        from builder.registry.hosts import RegistryHosts

        hosts = RegistryHosts.from_config(self.config)
        return replace(hosts, insecure=hosts.insecure | frozenset(self.insecure_registries))


def default_root() -> Path:
    """The root a command uses when neither its flag, the environment nor
    the file names one (Settings.root None)."""
    if os.environ.get(ENV_ROOT):
        return Path(os.path.abspath(os.environ[ENV_ROOT]))  # as resolve
    from runtime.userns import host_ids

    if host_ids()[0] == 0:
        return Path("/var/lib/pybuild")
    return Path(_xdg_dir(os.environ, "XDG_DATA_HOME", ".local/share")) / "pybuild"


def _xdg_dir(env: Mapping[str, str], name: str, default: str) -> str:
    """An XDG base directory: the variable's value, when absolute (the spec
    says a relative one is invalid and to be ignored), else ~/default."""
    value = env.get(name, "")
    return value if os.path.isabs(value) else os.path.join(os.path.expanduser("~"), default)


def config_candidates(env: Mapping[str, str]) -> list[Path]:
    return [Path(_xdg_dir(env, "XDG_CONFIG_HOME", ".config")) / "pybuild" / "config.toml", SYSTEM_CONFIG]


def find_config(explicit: str | os.PathLike | None, env: Mapping[str, str]) -> Path | None:
    """The file to read: an explicitly named one must exist; otherwise the
    first of the standard places that does."""
    named = explicit or env.get(ENV_CONFIG)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"config file {path}: no such file")
        return path
    return next((path for path in config_candidates(env) if path.is_file()), None)


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    import tomllib  # most hosts have no file: every command (a memo replay too) would pay ~4 ms

    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return parse_config(data, path)


def file_registry_hosts():
    """The registry settings of the config file pybuild would read
    ($PYBUILD_CONFIG, ~/.config/pybuild/config.toml, /etc/pybuild/config.toml),
    for a registry client given none; none when there is no file."""
    from builder.registry.hosts import RegistryHosts

    path = find_config(None, os.environ)
    return RegistryHosts.from_config(load_config(path)) if path else RegistryHosts()


def parse_config(data: Mapping, path: Path | None = None) -> Config:
    where = f"config file {path}" if path else "config"
    unknown = set(data) - {"root", "isolation", "progress", "registry", "gc", "limits"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    root = data.get("root")
    if root is not None and not isinstance(root, str):
        raise ConfigError(f"{where}: root must be a string")
    return Config(
        path=path,
        root=Path(root) if root else None,
        isolation=_enum(Isolation, data.get("isolation"), "isolation", where),
        progress=_enum(ProgressMode, data.get("progress"), "progress", where),
        registries=_registries(data.get("registry", {}), where),
        gc_policy=_gc(data.get("gc", {}), where),
        limits=_limits(data.get("limits", {}), where),
    )


def _enum(kind, value, key: str, where: str):
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ConfigError(f"{where}: {key} = {value!r}: expected one of {choices}") from None


def _registries(table, where: str) -> dict[str, RegistryConfig]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [registry] must be a table of hosts")
    found = {}
    for host, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: [registry.{host!r}] must be a table")
        unknown = set(entry) - {"mirrors", "insecure", "http", "ca"}
        if unknown:
            raise ConfigError(f"{where}: [registry.{host!r}]: unknown key {sorted(unknown)[0]!r}")
        mirrors = entry.get("mirrors", [])
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise ConfigError(f"{where}: [registry.{host!r}] mirrors must be a list of hosts")
        # buildkitd spells plain HTTP `http = true`; accept it as `insecure`.
        insecure = entry.get("insecure", False) or entry.get("http", False)
        if not isinstance(insecure, bool):
            raise ConfigError(f"{where}: [registry.{host!r}] insecure must be true or false")
        ca = entry.get("ca")
        if ca is not None and not isinstance(ca, str):
            raise ConfigError(f"{where}: [registry.{host!r}] ca must be the path of a PEM file")
        found[host] = RegistryConfig(host, tuple(mirrors), insecure, ca)
    return found


def _gc(table, where: str) -> tuple[GCPolicy, ...]:
    if not isinstance(table, dict) or set(table) - {"policy"}:
        raise ConfigError(f"{where}: [gc] holds only [[gc.policy]] entries")
    policies = []
    for entry in table.get("policy", []):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: [[gc.policy]] entries must be tables")
        unknown = set(entry) - {"keep_storage", "keep_duration", "filters", "all"}
        if unknown:
            raise ConfigError(f"{where}: [[gc.policy]]: unknown key {sorted(unknown)[0]!r}")
        keep_storage = entry.get("keep_storage")
        keep_duration = entry.get("keep_duration")
        policies.append(GCPolicy(
            keep_storage=None if keep_storage is None else parse_size(keep_storage, where),
            keep_duration=None if keep_duration is None else parse_duration(keep_duration, where),
            filters=tuple(entry.get("filters", ())),
            all=bool(entry.get("all", False)),
        ))
    return tuple(policies)


def _limits(table, where: str) -> SizeLimits:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [limits] must be a table")
    unknown = set(table) - {"max_layer_size", "max_add_url_size"}
    if unknown:
        raise ConfigError(f"{where}: [limits]: unknown key {sorted(unknown)[0]!r}")
    sizes = {}
    for key, value in table.items():
        size = parse_size(value, f"{where}: [limits] {key}")
        if size <= 0:
            raise ConfigError(f"{where}: [limits] {key} must be more than 0 bytes")
        sizes[key] = size
    return SizeLimits(**sizes)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
# As docker and buildkitd read sizes (go-units RAMInBytes): every unit is
# binary, so `10GB`, `10G` and `10GiB` all mean 10 × 2**30 bytes.
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(value, where: str = "config") -> int:
    """`10GB`, `512MiB`, `1.5k` or a plain integer: a byte count."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(f"{where}: invalid size {value!r}: expected e.g. 10GB or 512MiB")
    unit = (match.group(2) or "").lower().removesuffix("b")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


# Go has no unit for days; `Nd` (N x 24h) is pybuild's extension to Go's
# durations, accepted since before they were read with Go's syntax.
_DAYS = re.compile(r"(\d+(?:\.\d+)?)d")


def parse_duration(value, where: str = "config") -> float:
    """Seconds: a number of seconds, or a Go duration (`48h`, `1h30m`,
    `90s`, `1.5h`, frontend.durations, as docker's `until=` reads it) in
    which `7d`-style days may stand too (`7d`, `1d12h`). A negative one is
    refused (an `until` in the future would prune every result)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    # Imported when a duration is written out: the no-op memo's replay reads
    # the config file (its GC policies) on every run, most often without one.
    from frontend.durations import parse_duration as go_duration

    pieces = _DAYS.split(str(value).strip())  # Go text, days, Go text, days, ..., Go text
    go_texts, days = [text for text in pieces[::2] if text], pieces[1::2]
    try:
        ns = [go_duration(text) for text in go_texts]
    except ValueError:
        ns = None
    if ns is None or not (go_texts or days) or any(n < 0 for n in ns):
        raise ConfigError(f"{where}: invalid duration {value!r}: expected e.g. 48h or 1h30m")
    return sum(float(count) * 86400 for count in days) + sum(ns) / 1e9


def load_settings(config_file: str | os.PathLike | None, env: Mapping[str, str], **flags) -> Settings:
    """The settings of a command: its flags (`resolve`'s keywords), the
    environment, and the config file they select. Raises ConfigError."""
    return resolve(config=load_config(find_config(config_file, env)), env=env, **flags)


def _file_root(config: Config) -> str | None:
    """The file's root, except the system file's for a rootless process: a
    user cannot use root's /var/lib/pybuild (podman, too, ignores the system
    storage path when rootless); the user's own file may name one."""
    from runtime.userns import rootless

    if config.path == SYSTEM_CONFIG and rootless():
        return None
    return config.root


def resolve(*, config: Config, env: Mapping[str, str], root: str | None = None, isolation: str | None = None,
            progress: str | None = None, insecure: tuple[str, ...] = ()) -> Settings:
    """Combine flag values (None when not given), the environment and the file.
    A relative root is taken from the working directory, once, here: the
    snapshotter mounts from helper threads with a working directory of their
    own (runtime.snapshot), where a relative path would name another place."""
    root_value = root or env.get(ENV_ROOT) or _file_root(config)
    progress_value = progress or env.get(ENV_PROGRESS) or config.progress or ProgressMode.AUTO
    try:
        progress_mode = ProgressMode(progress_value)
    except ValueError:
        raise ConfigError(f"invalid progress mode {progress_value!r} (from ${ENV_PROGRESS}): expected one of "
                          + ", ".join(m.value for m in ProgressMode)) from None
    isolation_value = isolation or (config.isolation.value if config.isolation else None)
    merged_insecure = tuple(dict.fromkeys((*insecure, *config.insecure_registries)))
    return Settings(config, Path(os.path.abspath(root_value)) if root_value else None, isolation_value,
                    progress_mode, merged_insecure)
