"""Registry credentials: `login` and `logout`, kept where docker keeps them."""

from __future__ import annotations

import sys

import click

from builder.cli.guard import run_guarded
from builder.cli.shared import config_option, debug_option, insecure_option, load_settings


@click.command()
@click.argument("registry")
@click.option("-u", "--username", help="User name (asked when not given).")
@click.option("-p", "--password", help="Password (prefer --password-stdin: a flag shows in `ps`).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@insecure_option
@config_option
@debug_option
def login(registry, username, password, password_stdin, insecure, config_file, debug):
    """Log in to a registry: check the credentials, then save them in
    docker's config.json ($DOCKER_CONFIG or ~/.docker), as `docker login`.

    \b
    Example:
      echo "$TOKEN" | pybuild login registry.local:5000 -u ci --password-stdin
    """
    from builder.registry.auth import Credentials, store_credentials
    from builder.registry.client import RegistryClient

    if password_stdin:
        if password:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    username = username or click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    if not username or not password:
        raise click.UsageError("a user name and a password are required")
    creds = Credentials(username, password)

    def action():
        host = _registry_host(registry)
        hosts = load_settings(config_file, insecure=insecure).registry_hosts
        client = RegistryClient(None, hosts=hosts, auth=lambda _registry: creds)
        try:
            client.check_login(host)
        finally:
            client.close()
        path = store_credentials(host, creds)
        click.echo(f"Login Succeeded (credentials saved in {path})")

    run_guarded(debug, action)


@click.command()
@click.argument("registry")
@debug_option
def logout(registry, debug):
    """Forget the credentials saved for a registry.

    \b
    Example:
      pybuild logout registry.local:5000
    """
    from builder.registry.auth import erase_credentials

    def action():
        host = _registry_host(registry)
        if erase_credentials(host):
            click.echo(f"Removing login credentials for {host}")
        else:
            click.echo(f"Not logged in to {host}")

    run_guarded(debug, action)


def _registry_host(text: str) -> str:
    """`https://host:5000/v2/`, `host:5000` or `docker.io` → the registry's name."""
    host = text.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


COMMANDS = (login, logout)
