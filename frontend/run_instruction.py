"""RUN: the Exec op of one RUN instruction, with its heredoc scripts, its
`--mount`s turned into mount specs, its network and security modes and
the environment the command sees."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frontend import instructions as ins
from frontend.errors import DockerfileError
from frontend.mounts import parse_mount
from frontend.canonical import PROXY_ARGS
from frontend.ops import Exec, InlineFile, MountSpec, MountType, NetworkMode, Scratch, WriteFiles
from frontend.parser import chomp_heredoc, parse_heredoc
from frontend.paths import normalize_path
from frontend.stage_state import StageState

if TYPE_CHECKING:
    from frontend.convert import Converter


def do_run(conv: Converter, state: StageState, cmd: ins.Run) -> None:
    inputs = [state.rootfs]
    mounts: list[MountSpec] = []
    name_suffix = ""
    args = list(cmd.command)
    if cmd.heredocs:
        doc = cmd.heredocs[0]
        if parse_heredoc(args[0]) is not None:
            data = chomp_heredoc(doc.content) if doc.chomp else doc.content
            if data.startswith("#!"):
                # A script with a shebang is written to a file and run
                # as a program, from a read-only mount at /dev/pipes/.
                script = conv.add(
                    WriteFiles(
                        inputs=(conv.add(Scratch()),),
                        files=(InlineFile(doc.name, data.encode()),),
                        dest="/",
                        chmod="0755",
                    ),
                    "preparing inline document",
                )
                inputs.append(script)
                mounts.append(MountSpec(type=MountType.BIND, target="/dev/pipes/", input=len(inputs) - 1,
                                        source="/", readonly=True))  # fmt: skip
                args = ["/dev/pipes/" + doc.name]
            else:
                # A plain script is handed to the shell as its command.
                args = [data]
            name_suffix = f" ({_summarize(doc.content)})"
        else:
            # `RUN python3 <<EOF` and friends: give the shell the whole
            # heredoc text and let it do the redirection.
            full = args[0]
            for d in cmd.heredocs:
                full += "\n" + d.content + d.name
            args = [full]
    if cmd.shell_form:
        args = conv.with_shell(state, args)
    for raw in cmd.mounts:
        mounts.append(_mount_spec(conv, state, cmd, raw, inputs))
    try:
        network = NetworkMode(cmd.network or "default")
    except ValueError:
        raise DockerfileError(f'invalid network mode "{cmd.network}"', cmd.location) from None
    security = cmd.security or "sandbox"
    if security not in ("sandbox", "insecure"):
        raise DockerfileError(f'unsupported security mode "{cmd.security}"', cmd.location)
    env = _run_env(conv, state)
    cfg = state.config["config"]
    op = Exec(
        inputs=tuple(inputs),
        args=tuple(args),
        env=env,
        # The config keeps an absolute WORKDIR as written ("/a/./b/"); the
        # op takes the clean form so that spelling does not change its key.
        cwd=normalize_path("/", cfg.get("WorkingDir") or "/", keep_slash=False),
        user=cfg.get("User") or "",
        network=network,
        mounts=tuple(mounts),
        security=security,
        extra_hosts=conv.extra_hosts,
    )
    state.rootfs = conv.add(
        op, conv.step_name(state, conv.display_text(state, cmd) + name_suffix), cmd.location, state.display
    )
    conv.commit(state, "RUN " + _command_string(state, args), layer=True, buildkit_suffix=True)


def _run_env(conv: Converter, state: StageState) -> tuple[str, ...]:
    env = [f"{k}={v}" for k, v in state.env.items()]
    present = {k.upper() for k in state.env}
    # Proxy build args reach RUN without an ARG, as in BuildKit.
    for key in sorted(conv.build_args):
        if key.upper() in PROXY_ARGS and key.upper() not in present and key not in state.env:
            env.append(f"{key}={conv.build_args[key]}")
            conv.used_args.add(key)
    return tuple(env)


def _command_string(state: StageState, args: list[str]) -> str:
    """The history's `RUN` text: BuildKit prefixes the command with the
    stage's build args (`|2 A=1 B=2 sh -c ...`), one per ARG instruction:
    an ARG declared twice is listed twice, with its value now."""
    values = [f"{arg.key}={state.env.get(arg.key, arg.value or '')}" for arg in state.build_args]
    if not values:
        return " ".join(args)
    return " ".join([f"|{len(values)}", *values, *args])


def _mount_spec(conv: Converter, state: StageState, cmd: ins.Run, raw: str, inputs: list[str]) -> MountSpec:
    """One `--mount` of a RUN, expanded in the stage's scope; a mount that
    reads a filesystem appends its vertex to `inputs`."""
    try:
        mount = parse_mount(raw, lambda word: conv.expand(word, state.env, cmd.location))
    except ins.Failure as err:
        raise DockerfileError(str(err), cmd.location) from None
    index = None
    if mount.from_:
        source = conv.source_vertex(state, cmd, mount.from_, as_tree=True)
        inputs.append(source)
        index = len(inputs) - 1
    elif mount.type == MountType.BIND:
        inputs.append(conv.context_vertex())
        index = len(inputs) - 1
    target = mount.target
    if target and not target.startswith("/"):
        target = normalize_path(state.config["config"].get("WorkingDir") or "/", target, keep_slash=False)
    return MountSpec(
        type=mount.type,
        target=target,
        input=index,
        source=normalize_path("/", mount.source or "/", keep_slash=False),
        readonly=mount.readonly,
        cache_id=mount.id if mount.type == MountType.CACHE else "",
        sharing=mount.sharing,
        mode=mount.mode,
        uid=mount.uid,
        gid=mount.gid,
        size=mount.size,
        secret_id=mount.id if mount.type in (MountType.SECRET, MountType.SSH) else "",
        env=mount.env,
        required=mount.required,
    )


def _summarize(doc: str) -> str:
    # A heredoc in a step's name: its first line, "..." when there are more.
    lines = doc.strip().replace("\r\n", "\n").split("\n")
    return lines[0] + ("..." if len(lines) > 1 else "")
