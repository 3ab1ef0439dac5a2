"""Saved authentications: ``auth:create`` / ``auth:list`` / ``auth:delete``. Keys are never arguments."""

from __future__ import annotations

import os
import sys

import click

from ..errors import ConfigError
from ..home import Home
from ..secrets import CredentialStore, check_name
from .hints import next_step


def credential_store(home: Home) -> CredentialStore:
    return CredentialStore(home.ensure().credentials)


@click.command("auth:create")
@click.argument("name")
@click.argument("extra", nargs=-1, metavar="")  # caught so a pasted key is refused without being echoed
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input (a trailing newline is dropped).")
@click.option("--from-env", "env_var", metavar="VAR", help="Read the key from environment variable VAR.")
@click.option("--replace", is_flag=True, help="Overwrite an authentication of the same name.")
@click.pass_obj
def auth_create(home: Home, name: str, extra: tuple[str, ...], from_stdin: bool, env_var: str | None, replace: bool) -> None:
    """Save a Klaviyo private API key under NAME (HOME/credentials.json, mode 0600).

    The key is read from a hidden prompt, from stdin (--stdin) or from an
    environment variable (--from-env VAR); never from the command line. Config
    files then use it with 'connection: NAME' under 'in:'.
    """
    check_name(name)
    if extra:
        raise ConfigError(
            "auth:create takes only NAME: the key is never read from the command line (use the prompt, --stdin or --from-env VAR)"
        )
    if from_stdin and env_var:
        raise ConfigError("give --stdin or --from-env, not both")
    if env_var:
        key = os.environ.get(env_var)
        if not key:
            raise ConfigError(f"environment variable {env_var} is not set or empty", key="from_env")
    elif from_stdin:
        key = sys.stdin.read().rstrip("\r\n")  # a pipe's trailing newline; a line break inside is refused
    else:
        key = click.prompt("Klaviyo private API key", hide_input=True, err=True)
    store = credential_store(home)
    store.save(name, key, replace=replace)
    click.echo(f"Saved authentication {name!r} ({store.get(name)}) in {store.path}")

    next_step(
        f"use it with 'connection: {name}' under in: of an import config (connector:preview CONFIG), "
        f"'result_connection: {name}' in export settings, or api OPERATION --auth {name}"
    )


@click.command("auth:list")
@click.pass_obj
def auth_list(home: Home) -> None:
    """List saved authentications: names and a masked hint of each key (never the key)."""
    entries = credential_store(home).list()
    if not entries:
        click.echo("No saved authentications (create one with: klaviyo-bridge auth:create NAME)")
        return
    width = max(len(e["name"]) for e in entries)
    click.echo(f"{'Name':<{width}}  {'Key':<12}  Created")
    for e in entries:
        click.echo(f"{e['name']:<{width}}  {e['hint']:<12}  {e['created_at']}")


@click.command("auth:delete")
@click.argument("name")
@click.pass_obj
def auth_delete(home: Home, name: str) -> None:
    """Delete the saved authentication NAME."""
    credential_store(home).delete(name)
    click.echo(f"Deleted authentication {name!r}")


COMMANDS = (auth_create, auth_list, auth_delete)
