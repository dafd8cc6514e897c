"""RUN: an Exec op run by the runtime on a fresh overlay snapshot."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from builder.errors import PybuildError
from builder.ops.cachemount import cache_mount_dir, made_with_metadata
from builder.solver.keys import CacheKey, cache_key
from frontend.errors import ContextError
from frontend.ops import ContextSource, Exec, MountSpec, MountType, NetworkMode, Op
from runtime.errors import ExecCancelled
from runtime import userns
from runtime.binfmt import emulation_warning
from runtime.executor import scratch_dir
from runtime.fsutil import remove_tree, resolve_in_root
from runtime.prune import prune_unchanged_dirs
from runtime.spec import BindMount, ExecSpec, NetworkMode as RuntimeNetwork, TmpfsMount

if TYPE_CHECKING:
    from builder.solver.session import BuildSession

SECRET_DIR = "/run/secrets"

# The one place the frontend's NetworkMode (what `RUN --network` and the
# build's --network ask for) becomes the runtime's (the namespace a process
# gets); frontend/ and runtime/ never import each other, so each keeps its
# own enum. `default` is the host's network: pybuild has no bridge network,
# and a step's `default` is the build's --network (runtime_network).
RUNTIME_NETWORK = {
    NetworkMode.DEFAULT: RuntimeNetwork.HOST,
    NetworkMode.HOST: RuntimeNetwork.HOST,
    NetworkMode.NONE: RuntimeNetwork.NONE,
}


def runtime_network(step: NetworkMode, build: NetworkMode) -> RuntimeNetwork:
    """The network a RUN gets: its own --network, else the build's."""
    return RUNTIME_NETWORK[build if step is NetworkMode.DEFAULT else step]


class MountError(PybuildError):
    pass


class ExecImpl:
    def __init__(self, op: Exec, vertex: str, input_ops: Sequence[Op], session: BuildSession):
        self.op = op
        self.vertex = vertex
        self.input_ops = tuple(input_ops)
        self.session = session

    def cache_key(self, input_keys: Sequence[CacheKey]) -> CacheKey:
        content = None
        context_mounts = [m for m in self.op.mounts if m.type is MountType.BIND and self._is_context(m.input)]
        if context_mounts:
            # A bind mount of the context reads files: their content is part of the step.
            context = self.session.contexts.main
            content = ",".join(str(context.checksum(self._context_selection(m))) for m in context_mounts)
        return cache_key(self.op.canonical(), input_keys, content)

    def _context_selection(self, spec: MountSpec):
        try:
            return self.session.contexts.main.select([spec.source])
        except ContextError:
            # BuildKit fails on the checksum of the mount's source; the
            # context's own error speaks of COPY, which this is not
            raise MountError(f'failed to compute cache key: "{spec.source}": not found') from None

    def _is_context(self, index) -> bool:
        if index is None:
            return False
        return isinstance(self.input_ops[index], ContextSource)

    def execute(self, inputs, cancel: threading.Event):
        snapshots = self.session.snapshots
        chain = tuple(inputs[0])
        snapshot = snapshots.create()
        try:
            with contextlib.ExitStack() as stack:
                rootfs = stack.enter_context(snapshots.mount(chain, snapshot))
                env = list(self.op.env)
                ssh_socks = []
                mounts = []
                for spec in self.op.mounts:
                    if spec.type is MountType.SSH:
                        # client/llb/exec.go numbers the default sockets by
                        # their rank among the step's ssh mounts
                        ssh_socks.append(spec.target or f"/run/buildkit/ssh_agent.{len(ssh_socks)}")
                        mount = self._ssh(spec, ssh_socks[-1], stack)
                    else:
                        mount = self._mount(spec, inputs, env, stack)
                    if mount is not None:
                        mounts.append(mount)
                if ssh_socks and not any(e.startswith("SSH_AUTH_SOCK=") for e in env):
                    # client/llb/exec.go: the first ssh mount's socket, even
                    # when its agent was not forwarded; an ENV value wins
                    env.append(f"SSH_AUTH_SOCK={ssh_socks[0]}")
                # llb's ExecOp sorts its mounts by target, so a mount under
                # another one is seen whatever the order of the --mount flags
                mounts.sort(key=lambda m: m.target.encode())
                exec_spec = ExecSpec(
                    args=self.op.args,
                    env=tuple(env),
                    cwd=self.op.cwd or "/",
                    user=self.op.user,
                    network=runtime_network(self.op.network, self.session.options.network),
                    mounts=tuple(mounts),
                    limits=self.session.options.limits,
                    extra_hosts=self.op.extra_hosts,
                )
                if cancel.is_set():
                    raise ExecCancelled(exec_spec.args)
                exposed = emulation_warning(rootfs)
                if exposed:
                    self.session.reporter.warning(exposed)
                self.session.executor.run(exec_spec, rootfs,
                                          lambda data: self.session.reporter.output(self.vertex, data))
            lowers = [snapshots.fs_path(s) for s in reversed(chain)]
            prune_unchanged_dirs(snapshots.fs_path(snapshot), lowers)
        except BaseException:
            snapshots.remove(snapshot)
            raise
        return chain + (snapshot,)

    def _mount(self, spec: MountSpec, inputs, env: list, stack: contextlib.ExitStack):
        if spec.type is MountType.BIND:
            return self._bind(spec, inputs, stack)
        if spec.type is MountType.CACHE:
            seed, from_ref = None, ""
            if spec.input is not None:
                seed = lambda fresh: self._seed_cache(spec, inputs, fresh)
                if not self._is_context(spec.input):
                    # the state of `from`, as BuildKit's ref id: its top snapshot
                    from_ref = next(reversed(tuple(inputs[spec.input])), "")
            path = stack.enter_context(cache_mount_dir(self.session.cache_mounts, spec, seed, from_ref))
            return BindMount(path, _check_target(spec.target), readonly=spec.readonly)
        if spec.type is MountType.TMPFS:
            _check_target(spec.target)
            return TmpfsMount(spec.target, spec.size)
        if spec.type is MountType.SECRET:
            return self._secret(spec, env, stack)
        raise MountError(f"unsupported mount type {spec.type.value}")

    def _source_view(self, spec: MountSpec, inputs, stack, writable: bool) -> Path:
        """A host directory holding the mount's `from` filesystem."""
        if self._is_context(spec.input):
            return self.session.contexts.main.root
        snapshots = self.session.snapshots
        chain = tuple(inputs[spec.input]) if spec.input is not None else tuple(inputs[0])
        if writable:
            # rw bind mounts see the source but their writes are thrown away.
            scratch = snapshots.create()
            stack.callback(snapshots.remove, scratch)
            return stack.enter_context(snapshots.mount(chain, scratch))
        return stack.enter_context(snapshots.mount(chain, None))

    def _bind(self, spec: MountSpec, inputs, stack):
        _check_target(spec.target)
        writable = not spec.readonly
        if self._is_context(spec.input):
            # The context as BuildKit transfers it: only what .dockerignore
            # lets through, never the host directory itself (which would
            # show ignored files, and take writes when rw).
            from builder.ops.copy import copy_into

            copy = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=self.session.tmp)))
            selection = self._context_selection(spec)
            if not selection:
                raise MountError(f"bind mount source {spec.source} does not exist")
            copy_into(copy, selection, "/src/" if selection.matches[0].is_dir else "/src")
            return BindMount(copy / "src", spec.target, readonly=not writable)
        view = self._source_view(spec, inputs, stack, writable)
        source = resolve_in_root(view, spec.source)
        if not source.exists():
            # BuildKit's words, which name the process, and its host path
            # where pybuild names the path in `from`
            process = " ".join(self.op.args).replace('"', '\\"')
            raise MountError(f'process "{process}" did not complete successfully: '
                             f"open {posixpath.join('/', spec.source)}: no such file or directory")
        return BindMount(source, spec.target, readonly=not writable)

    def _seed_cache(self, spec: MountSpec, inputs, fresh: Path) -> bool:
        """Fill a new cache from `from`/`source`; True when the cache took the
        source directory's own mode and owner. BuildKit mounts that directory
        as the cache's first state, and applies uid/gid/mode only to a cache
        made from the root of `from` (convert_runmount.go setCacheUIDGID)."""
        if made_with_metadata(spec):
            return False  # an empty directory made with those, as with no `from`
        with contextlib.ExitStack() as stack:
            view = self._source_view(spec, inputs, stack, writable=False)
            source = resolve_in_root(view, spec.source)
            if not source.is_dir():
                return False
            _copy_tree(source, fresh)
            info = source.stat()
            os.chmod(fresh, info.st_mode & 0o7777)
            userns.chown(fresh, info.st_uid, info.st_gid)
            return True

    def _secret(self, spec: MountSpec, env: list, stack):
        secret_id = spec.secret_id or os.path.basename(spec.target or "")
        value = self.session.options.secrets.values.get(secret_id)
        if value is None:
            if spec.required:
                raise MountError(f"secret {secret_id}: not found (pass it with --secret id={secret_id},src=FILE)")
            return None
        if spec.env:
            env.append(f"{spec.env}={value.decode(errors='replace')}")
            if not spec.target:
                return None
        # /dev/shm is a tmpfs: the value never touches the disk under the root.
        holder = scratch_dir(None, "pybuild-secret-")  # the executors' tmpfs scratch
        stack.callback(remove_tree, holder)
        path = holder / "secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        os.chmod(path, spec.mode if spec.mode is not None else 0o400)
        userns.chown(path, spec.uid or 0, spec.gid or 0)
        target = spec.target or f"{SECRET_DIR}/{secret_id}"
        # BuildKit binds a secret "ro,rbind,nodev,nosuid,noexec"
        # (solver/llbsolver/mounts/mount.go): it cannot be run as a program
        return BindMount(path, target, readonly=True, sealed=True)

    def _ssh(self, spec: MountSpec, target: str, stack):
        from builder.ops.ssh_proxy import SocketProxy

        ssh_id = spec.secret_id or "default"
        agent = self.session.ssh.get(ssh_id)
        if agent is None:
            if spec.required:
                raise MountError(f"unset ssh forward key {ssh_id} (pass it with --ssh {ssh_id})")
            return None
        holder = scratch_dir(None, "pybuild-ssh-")  # a short path: sockets allow 108 bytes
        stack.callback(remove_tree, holder)
        proxy = SocketProxy(agent, holder / "agent.sock", uid=spec.uid or 0, gid=spec.gid or 0,
                            mode=spec.mode if spec.mode is not None else 0o600)
        stack.callback(proxy.close)
        return BindMount(holder / "agent.sock", target, readonly=False)


def _copy_tree(source: Path, dest: Path) -> None:
    """shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True) with
    an explicit stack instead of recursion: a stage may hold a tree deeper
    than Python's recursion limit."""
    stack = [(os.fspath(source), os.fspath(dest), iter(os.listdir(source)))]
    while stack:
        src_dir, dst_dir, names = stack[-1]
        for name in names:
            src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
                shutil.copystat(src, dst, follow_symlinks=False)
            elif os.path.isdir(src):
                os.makedirs(dst, exist_ok=True)
                stack.append((src, dst, iter(os.listdir(src))))
                break  # its entries next; this loop resumes where it left off
            else:
                shutil.copy2(src, dst)
        else:
            stack.pop()
            shutil.copystat(src_dir, dst_dir)


def _check_target(target: str) -> str:
    # a relative target (or none) is joined to WORKDIR first, and may land on
    # "/" only then (convert_runmount.go)
    if target.strip("/") in ("", "."):
        raise MountError('invalid mount target "/"')
    return target
