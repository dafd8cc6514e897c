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
                   "amd64, 386) with the F flag; as root.")
@click.option("--uninstall", "uninstall_names", metavar="ARCH[,ARCH...]",
              help="Remove the handlers that run these architectures' executables; as root.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
@debug_option
def binfmt(install_names, uninstall_names, output_format, debug):
    """Show the binfmt_misc emulators, or register qemu's.

    Mounts binfmt_misc at /proc/sys/fs/binfmt_misc first when it is not
    mounted (as root; rootless, what is registered is only shown).

    \b
    Examples:
      pybuild binfmt
      pybuild binfmt --install arm64,arm
      pybuild binfmt --uninstall arm
    """
    from runtime import binfmt as emulators

    def act():
        done = []
        if install_names or uninstall_names:
            _require_root()
        for arch in _arches(emulators, uninstall_names):
            removed = emulators.uninstall(arch)
            done.append(f"{arch.name}: removed {', '.join(removed)}" if removed else f"{arch.name}: none registered")
        for arch in _arches(emulators, install_names):
            done.append(emulators.install(arch))
        mounted_now = not _rootless() and emulators.mount_binfmt_misc()
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
                      "enabled": handler.enabled, "flags": handler.flags, "interpreter": handler.interpreter}
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
        click.echo(f"{'NAME':<22} {'PLATFORM':<15} {'STATUS':<9} {'FLAGS':<6} INTERPRETER")
        for handler in view["handlers"]:
            status = "enabled" if handler["enabled"] else "disabled"
            click.echo(f"{handler['name']:<22} {handler['platform'] or '-':<15} {status:<9} "
                       f"{handler['flags'] or '-':<6} {handler['interpreter']}")


COMMANDS = (binfmt,)


def _rootless() -> bool:
    """An ordinary user's pybuild, root of its own user namespace or not:
    the host's binfmt_misc is root's (runtime/userns.py)."""
    from runtime.userns import rootless

    return rootless()
