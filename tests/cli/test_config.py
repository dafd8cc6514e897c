"""The configuration file, and flag > environment > file precedence."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.config import (ConfigError, Isolation, ProgressMode, find_config, load_config, parse_duration,
                            parse_size, resolve)

FULL = """
root = "/srv/pybuild"
isolation = "builtin"
progress = "plain"

[registry."docker.io"]
mirrors = ["mirror.gcr.io"]

[registry."registry.internal:5000"]
insecure = true

[registry."other.internal"]
http = true

[[gc.policy]]
keep_storage = "10GB"
keep_duration = "1h30m"
filters = ["type==exec.cachemount"]

[[gc.policy]]
all = true
keep_storage = "512MiB"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_every_isolation_is_accepted(tmp_path):
    for name in ("builtin", "oci", "chroot"):
        config = load_config(write(tmp_path / f"{name}.toml", f'isolation = "{name}"\n'))
        assert config.isolation is Isolation(name)


def test_full_file_is_parsed_into_a_frozen_config(tmp_path):
    config = load_config(write(tmp_path / "config.toml", FULL))
    assert config.root == Path("/srv/pybuild")
    assert config.isolation is Isolation.BUILTIN
    assert config.progress is ProgressMode.PLAIN
    assert config.registries["docker.io"].mirrors == ("mirror.gcr.io",)
    assert config.insecure_registries == ("other.internal", "registry.internal:5000")
    first, second = config.gc_policy
    assert (first.keep_storage, first.keep_duration, first.filters) == (10 * 2**30, 5400.0, ("type==exec.cachemount",))
    assert (second.keep_storage, second.all) == (512 * 2**20, True)
    with pytest.raises(AttributeError):
        config.root = Path("/elsewhere")


@pytest.mark.parametrize("text, message", [
    ('isolation = "vm"', "isolation = 'vm': expected one of builtin, oci, chroot"),
    ('rooot = "/x"', "unknown key 'rooot'"),
    ('[registry."a"]\nmirror = ["b"]', "unknown key 'mirror'"),
    ('[[gc.policy]]\nkeep_storage = "ten"', "invalid size 'ten'"),
    ("root = [", "config file"),
])
def test_bad_files_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match="config file .*config.toml") as caught:
        load_config(write(tmp_path / "config.toml", text))
    assert message in str(caught.value)


def test_sizes_and_durations():
    assert parse_size("1kB") == 1024 == parse_size("1k") and parse_size("2KiB") == 2048 and parse_size(7) == 7
    assert parse_duration("48h") == 172800 and parse_duration("1d2s") == 86402 and parse_duration(5) == 5.0
    with pytest.raises(ConfigError):
        parse_duration("1h30")


def test_user_file_wins_over_system_and_explicit_file_must_exist(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "home")}
    assert find_config(None, env) in (None, Path("/etc/pybuild/config.toml"))
    user = write(tmp_path / "home" / "pybuild" / "config.toml", "")
    assert find_config(None, env) == user
    named = write(tmp_path / "named.toml", "")
    assert find_config(None, {**env, "PYBUILD_CONFIG": str(named)}) == named
    assert find_config(str(named), {**env, "PYBUILD_CONFIG": "/nonexistent"}) == named
    with pytest.raises(ConfigError, match="no such file"):
        find_config(str(tmp_path / "missing.toml"), env)


def test_precedence_flag_over_env_over_file(tmp_path):
    config = load_config(write(tmp_path / "config.toml", FULL))
    file_only = resolve(config=config, env={})
    assert (file_only.root, file_only.progress, file_only.isolation) == (Path("/srv/pybuild"), ProgressMode.PLAIN,
                                                                         "builtin")
    env = {"PYBUILD_ROOT": "/from/env", "PYBUILD_PROGRESS": "rawjson"}
    from_env = resolve(config=config, env=env)
    assert (from_env.root, from_env.progress) == (Path("/from/env"), ProgressMode.RAWJSON)
    flags = resolve(config=config, env=env, root="/from/flag", progress="quiet", isolation="oci",
                    insecure=("flag.host",))
    assert (flags.root, flags.progress, flags.isolation) == (Path("/from/flag"), ProgressMode.QUIET, "oci")
    assert flags.insecure_registries == ("flag.host", "other.internal", "registry.internal:5000")
    with pytest.raises(ConfigError, match="PYBUILD_PROGRESS"):
        resolve(config=config, env={"PYBUILD_PROGRESS": "fancy"})


def info(tmp_path, *args, env=None):
    home = {"XDG_CONFIG_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(main, ["info", "--format", "json", *args], env={**home, "PYBUILD_ROOT": None,
                                                                             **(env or {})})
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_reads_the_users_file_and_env_and_flag_override_it(tmp_path):
    write(tmp_path / "home" / "pybuild" / "config.toml",
          f'root = "{tmp_path / "file-root"}"\n[registry."r.internal"]\ninsecure = true\n')
    shown = info(tmp_path)
    assert shown["root"] == str(tmp_path / "file-root")
    assert shown["config file"] == str(tmp_path / "home" / "pybuild" / "config.toml")
    assert shown["insecure registries"] == ["r.internal"]
    assert info(tmp_path, env={"PYBUILD_ROOT": str(tmp_path / "env-root")})["root"] == str(tmp_path / "env-root")
    assert info(tmp_path, "--root", str(tmp_path / "flag-root"),
                env={"PYBUILD_ROOT": str(tmp_path / "env-root")})["root"] == str(tmp_path / "flag-root")


def test_cli_bad_config_exits_1_without_traceback(tmp_path):
    write(tmp_path / "home" / "pybuild" / "config.toml", 'isolation = "vm"\n')
    result = CliRunner().invoke(main, ["info"], env={"XDG_CONFIG_HOME": str(tmp_path / "home")})
    assert result.exit_code == 1
    assert "isolation = 'vm'" in result.output
    assert "Traceback" not in result.output
