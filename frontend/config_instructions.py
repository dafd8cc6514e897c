"""The instructions that change a stage's image config: ENV, LABEL, ARG,
USER, CMD, ENTRYPOINT, SHELL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK,
ONBUILD, MAINTAINER, and WORKDIR (which also makes the directory). Each
records its history entry as BuildKit prints it, with Go's fmt verbs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from frontend import instructions as ins
from frontend import lint
from frontend.durations import format_duration
from frontend.errors import DockerfileError
from frontend.image_config import set_env
from frontend.lexer import ExpansionError, go_quote
from frontend.ops import MakeDir
from frontend.paths import join_workdir, normalize_path
from frontend.stage_state import NON_ENV_ARGS, StageState

if TYPE_CHECKING:
    from frontend.convert import Converter


def do_env(conv: Converter, state: StageState, cmd: ins.Env) -> None:
    pairs = [(conv.expand_checked(p.key, state, cmd), conv.expand_checked(p.value, state, cmd))
             for p in cmd.pairs]  # fmt: skip
    env_list = state.config["config"].setdefault("Env", [])
    for key, value in pairs:
        state.env[key] = value
        set_env(env_list, key, value)
    conv.commit(state, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))


def do_label(conv: Converter, state: StageState, cmd: ins.Label) -> None:
    pairs = [(conv.expand_checked(p.key, state, cmd), conv.expand_checked(p.value, state, cmd))
             for p in cmd.pairs]  # fmt: skip
    labels = state.config["config"].get("Labels") or {}
    for key, value in pairs:
        labels[key] = value
    state.config["config"]["Labels"] = labels
    conv.commit(state, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))


def do_arg(conv: Converter, state: StageState, cmd: ins.Arg) -> None:
    commits = []
    for definition in cmd.args:
        key = definition.key
        default = None if definition.value is None else conv.expand_checked(definition.value, state, cmd)
        value = default
        if value is None and key not in conv.build_args and key in conv.global_args:
            value = conv.global_args[key]  # ARG NAME picks the global value up
        if key in conv.build_args:
            value = conv.build_args[key]
        if value is not None and key not in NON_ENV_ARGS:
            state.env[key] = value
        conv.used_args.add(key)
        state.build_args.append(ins.ArgDef(key, value))
        # The history shows the Dockerfile's default, not the value a
        # --build-arg or the global scope gave (docker 26: `ARG C` stays
        # "ARG C" whatever --build-arg C=... says)
        commits.append(key if default is None else f"{key}={default}")
    conv.commit(state, "ARG " + " ".join(commits))


def do_user(conv: Converter, state: StageState, cmd: ins.User) -> None:
    name = conv.expand_checked(cmd.user, state, cmd)
    state.config["config"]["User"] = name
    conv.commit(state, f"USER {name}")


def do_cmd(conv: Converter, state: StageState, cmd: ins.Cmd) -> None:
    if cmd.shell_form and not state.config["config"].get("Shell"):
        lint.json_args_recommended(conv.linter, cmd.name, cmd.location)
    args = conv.with_shell(state, cmd.command) if cmd.shell_form else list(cmd.command)
    state.config["config"]["Cmd"] = args
    state.config["config"]["ArgsEscaped"] = True
    state.cmd_set = True
    conv.commit(state, "CMD " + _go_list(args))


def do_entrypoint(conv: Converter, state: StageState, cmd: ins.Entrypoint) -> None:
    if cmd.shell_form and not state.config["config"].get("Shell"):
        lint.json_args_recommended(conv.linter, cmd.name, cmd.location)
    # A bare `ENTRYPOINT` is an empty shell form: BuildKit still wraps it
    # in the shell, giving ["/bin/sh", "-c", ""].
    args = conv.with_shell(state, cmd.command) if cmd.shell_form else list(cmd.command)
    cfg = state.config["config"]
    cfg["Entrypoint"] = args
    if not state.cmd_set:
        cfg.pop("Cmd", None)  # an ENTRYPOINT drops the CMD inherited from the base
    conv.commit(state, "ENTRYPOINT " + _go_list(args))


def do_shell(conv: Converter, state: StageState, cmd: ins.Shell) -> None:
    state.config["config"]["Shell"] = list(cmd.command)
    conv.commit(state, "SHELL " + _go_plain_list(cmd.command))


def do_expose(conv: Converter, state: StageState, cmd: ins.Expose) -> None:
    ports: list[str] = []
    for raw in cmd.ports:
        try:
            result = conv.lexer.process(raw, state.env)
        except ExpansionError as err:
            raise DockerfileError(err.message, cmd.location) from None
        words = result.words
        declared = {a.key for a in state.build_args}
        for name in sorted(result.unmatched - declared):
            lint.undefined_var(conv.linter, name, state.env, cmd.location)
        for word in words:
            lint.expose_port(conv.linter, word, cmd.location)
            try:
                ports.extend(_expose_ports(word))
            except ValueError as err:
                raise DockerfileError(str(err), cmd.location) from None
    exposed = state.config["config"].get("ExposedPorts") or {}
    exposed.update((port, {}) for port in ports)
    state.config["config"]["ExposedPorts"] = exposed
    # BuildKit 0.13 (docker 26) prints `EXPOSE %v` of the instruction's
    # own map[string]struct{}: Go prints a map's keys sorted. Later
    # releases print the []string instead; docker 26 is the oracle.
    conv.commit(state, "EXPOSE map[" + " ".join(f"{port}:{{}}" for port in sorted(set(ports))) + "]")


def do_volume(conv: Converter, state: StageState, cmd: ins.Volume) -> None:
    paths = [conv.expand_checked(p, state, cmd) for p in cmd.paths]
    volumes = state.config["config"].get("Volumes") or {}
    for p in paths:
        if not p:
            raise DockerfileError("VOLUME specified can not be an empty string", cmd.location)
        volumes[p] = {}
    state.config["config"]["Volumes"] = volumes
    conv.commit(state, "VOLUME " + _go_plain_list(paths))


def do_stopsignal(conv: Converter, state: StageState, cmd: ins.StopSignal) -> None:
    signal = conv.expand_checked(cmd.signal, state, cmd)
    if not _valid_signal(signal):
        raise DockerfileError(f"invalid signal: {signal}", cmd.location)
    state.config["config"]["StopSignal"] = signal
    conv.commit(state, f"STOPSIGNAL {signal}")


def do_healthcheck(conv: Converter, state: StageState, cmd: ins.Healthcheck) -> None:
    health: dict = {"Test": list(cmd.test)}
    for key, value in (("Interval", cmd.interval), ("Timeout", cmd.timeout),
                       ("StartPeriod", cmd.start_period), ("StartInterval", cmd.start_interval),
                       ("Retries", cmd.retries)):  # fmt: skip
        if value:
            health[key] = value
    state.config["config"]["Healthcheck"] = health
    conv.commit(state, _healthcheck_history(health))


def do_onbuild(conv: Converter, state: StageState, cmd: ins.Onbuild) -> None:
    # BuildKit records the trigger in the config but adds no history entry.
    cfg = state.config["config"]
    cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), cmd.expression]


def do_maintainer(conv: Converter, state: StageState, cmd: ins.Maintainer) -> None:
    state.config["author"] = cmd.maintainer
    conv.commit(state, f"MAINTAINER {cmd.maintainer}")


def do_workdir(conv: Converter, state: StageState, cmd: ins.Workdir) -> None:
    path = conv.expand_checked(cmd.path, state, cmd)
    if not state.workdir_set and not path.startswith("/"):
        lint.workdir_relative(conv.linter, path, cmd.location)
    state.workdir_set = True
    directory = join_workdir(state.config["config"].get("WorkingDir") or "", path)
    state.config["config"]["WorkingDir"] = directory
    layer = directory != "/"
    if layer:
        owner = state.config["config"].get("User") or ""
        state.rootfs = conv.add(
            MakeDir(inputs=(state.rootfs,), path=normalize_path("/", directory, keep_slash=False), user=owner),
            conv.step_name(state, conv.display_text(state, cmd)),
            cmd.location,
            state.display,
        )
    conv.commit(state, f"WORKDIR {directory}", layer=layer)


# -- history strings (Go's fmt verbs, as BuildKit prints them) ---------------


def _go_list(values) -> str:
    """%q of a []string: ["a" "b"]."""
    return "[" + " ".join(go_quote(v) for v in values) + "]"


def _go_plain_list(values) -> str:
    """%v of a []string: [a b]."""
    return "[" + " ".join(values) + "]"


def _healthcheck_history(health: dict) -> str:
    """`HEALTHCHECK %q` of BuildKit 0.13's *HealthConfig (docker 26): every
    field quoted, durations as their String(), and Retries, an int, as a
    Go rune literal ('\\x03'). Later releases print %+v instead."""
    durations = " ".join(go_quote(format_duration(health.get(key, 0)))
                         for key in ("Interval", "Timeout", "StartPeriod", "StartInterval"))
    return f"HEALTHCHECK &{{{_go_list(health.get('Test', []))} {durations} {_go_rune(health.get('Retries', 0))}}}"


def _go_rune(value: int) -> str:
    """%q of an int: strconv.QuoteRune (an invalid code point is U+FFFD),
    which escapes as %q of a string does but for the quotes."""
    if not 0 <= value <= 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        value = 0xFFFD
    char = chr(value)
    if char == "'":
        return "'\\''"
    body = char if char == '"' else go_quote(char)[1:-1]
    return f"'{body}'"


# -- ports and signals ---------------------------------------------------------

_SIGNALS = ("HUP INT QUIT ILL TRAP ABRT IOT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT "
            "CHLD CLD CONT STOP TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO POLL PWR SYS "
            "UNUSED").split()  # fmt: skip


def _valid_signal(text: str) -> bool:
    """moby/sys/signal.ParseSignal: a number, NAME, SIGNAME or RTMIN+n."""
    if text.isdigit():
        return 0 < int(text) <= 64
    name = text.upper()
    name = name[3:] if name.startswith("SIG") else name
    if name in _SIGNALS:
        return True
    match = re.fullmatch(r"RT(MIN|MAX)([+-]\d+)?", name)
    return bool(match) and abs(int(match.group(2) or 0)) <= 15


def _expose_ports(spec: str) -> list[str]:
    """docker/go-connections nat.ParsePortSpec: the container ports of
    `[ip:][hostPort:]containerPort[-end][/proto]`."""
    proto = "tcp"
    if "/" in spec:
        spec, proto = spec.rsplit("/", 1)
        if not proto:
            raise ValueError(f'invalid port specification: "{spec}/"')
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise ValueError(f"Invalid proto: {proto}")
        proto = proto.lower()
    container = spec.rsplit(":", 1)[-1] if not spec.startswith("[") or "]:" in spec else spec
    if not container:
        raise ValueError("no port specified: " + spec + "<empty>")
    start, dash, end = container.partition("-")
    if not start.isdigit() or (dash and not end.isdigit()):
        raise ValueError(f"Invalid containerPort: {container}")
    first, last = int(start), int(end) if dash else int(start)
    if first > 65535 or last > 65535 or last < first:
        raise ValueError(f"Invalid containerPort: {container}")
    return [f"{port}/{proto}" for port in range(first, last + 1)]
