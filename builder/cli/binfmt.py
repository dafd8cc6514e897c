"""`pybuild binfmt`: the binfmt_misc emulators that let RUN steps of a
foreign platform run here (qemu-user-static), shown or registered."""

from __future__ import annotations

import json

import click

from builder.cli.guard import run_guarded
from builder.cli.shared import debug_option
from builder.errors import PybuildError


class BinfmtRefused(PybuildError):
    """A registration this process may not make (not root)."""


@click.command()
@click.option("--install", "install_names", metavar="ARCH[,ARCH...]",
              help="Register qemu-user-static for these architectures (arm64, arm, riscv64, ppc64le, s390x, "
                   "amd64, 386) with the F flag, from a read-only mount; as root.")
@click.option("--uninstall", "uninstall_names", metavar="ARCH[,ARCH...]",
              help="Remove pybuild's handlers for these architectures (not another tool's); as root.")
@click.option("--force", is_flag=True,
              help="With --install: replace another tool's handler of the same name (qemu-<cpu>).")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
@debug_option
def binfmt(install_names, uninstall_names, force, output_format, debug):
    """Show the binfmt_misc emulators, or register qemu's.

    Mounts binfmt_misc at /proc/sys/fs/binfmt_misc first when it is not
    mounted (as root; rootless, what is registered is only shown). Every
    name is checked, and every handler --install would replace, before
    anything changes.

    \b
    Examples:
      pybuild binfmt
      pybuild binfmt --install arm64,arm
      pybuild binfmt --install arm64 --force
      pybuild binfmt --uninstall arm
    """
    from runtime import binfmt as emulators
    from runtime import binfmt_register

    def act():
        uninstalling = _arches(emulators, uninstall_names)
        installing = _arches(emulators, install_names)
        if force and not install_names:
            raise BinfmtRefused("--force goes with --install")
        done, mounted_now = [], False
        if install_names or uninstall_names:
            _require_root()
        if not _rootless():
            mounted_now = binfmt_register.mount_binfmt_misc()
        plans = [binfmt_register.plan_install(arch, force) for arch in installing]
        for arch in uninstalling:
            done.append(binfmt_register.uninstall(arch))
        for plan in plans:
            done.append(plan.apply())
        return done, mounted_now, _view(emulators)

    done, mounted_now, view = run_guarded(debug, act)
    if output_format == "json":
        click.echo(json.dumps({**view, "changes": done}, indent=2, sort_keys=True))
        return
    for line in done:
        click.echo(line)
    if mounted_now:
        click.echo(f"mounted binfmt_misc at {view['binfmt_misc']}")
    _print_view(view)


def _require_root() -> None:
    if _rootless():
        raise BinfmtRefused("registering emulators needs root: binfmt_misc's register file is root's "
                            "(rootless pybuild uses what root registered; `pybuild binfmt` shows it)")


def _arches(emulators, names: str | None) -> list:
    return [emulators.find_arch(name) for name in (names or "").split(",") if name.strip()]


def _view(emulators) -> dict:
    mounted = emulators.mounted()
    return {
        "binfmt_misc": str(emulators.BINFMT_MISC),
        "mounted": mounted,
        "enabled": mounted and emulators.globally_enabled(),
        "read_only": _rootless(),
        "native": [arch.platform for arch in emulators.native_arches()],
        "emulated": [arch.platform for arch in emulators.emulated_arches()],
        "handlers": [{"name": handler.name, "platform": handler.arch.platform if handler.arch else "",
                      "enabled": handler.enabled, "flags": handler.flags, "interpreter": handler.interpreter,
                      "pybuild_read_only": handler.read_only}
                     for handler in emulators.handlers()],
    }


def _print_view(view: dict) -> None:
    if not view["mounted"]:
        how = ("as root, `pybuild binfmt` mounts it" if not view["read_only"]
               else "rootless: a read-only view; root mounts it with `pybuild binfmt`")
        click.echo(f"binfmt_misc: not mounted at {view['binfmt_misc']} ({how})")
    else:
        state = "enabled" if view["enabled"] else "disabled"
        note = " (rootless: a read-only view)" if view["read_only"] else ""
        click.echo(f"binfmt_misc: {view['binfmt_misc']}, {state}{note}")
    click.echo(f"native:    {', '.join(view['native'])}")
    click.echo(f"emulated:  {', '.join(view['emulated']) or '-'}")
    if view["handlers"]:
        click.echo(f"{'NAME':<22} {'PLATFORM':<15} {'STATUS':<9} {'FLAGS':<6} {'READ-ONLY':<10} INTERPRETER")
        for handler in view["handlers"]:
            status = "enabled" if handler["enabled"] else "disabled"
            read_only = "yes" if handler["pybuild_read_only"] else "no"
            click.echo(f"{handler['name']:<22} {handler['platform'] or '-':<15} {status:<9} "
                       f"{handler['flags'] or '-':<6} {read_only:<10} {handler['interpreter']}")
        if not all(handler["pybuild_read_only"] for handler in view["handlers"] if handler["platform"]):
            click.echo("READ-ONLY no: another tool's registration; a RUN step emulated through it can change its "
                       "interpreter on the host (docs/isolation.md); `pybuild binfmt --install ARCH --force` "
                       "registers pybuild's read-only one")


COMMANDS = (binfmt,)


def _rootless() -> bool:
    """An ordinary user's pybuild, root of its own user namespace or not:
    the host's binfmt_misc is root's (runtime/userns.py)."""
    from runtime.userns import rootless

    return rootless()
