"""`smallfleet keys`: client API keys for the gateway."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import click
from rich.console import Console
from rich.table import Table

from smallfleet.cli.options import db_option, fleet_argument, open_database
from smallfleet.settings import field_docs, field_type
from smallfleet.store.limits import PERIODS, KeyLimits


def limit_flags(command: Callable) -> Callable:
    """One flag per KeyLimits field (flag = field name, help = its docstring): --budget-usd, --rpm, --tpm, --period."""
    docs = field_docs(KeyLimits)
    for f in reversed(dataclasses.fields(KeyLimits)):
        typ = click.Choice(PERIODS) if f.name == "period" else field_type(KeyLimits, f.name)
        default = f" [default: {f.default}]" if f.default is not None else " [default: no limit]"
        command = click.option(f"--{f.name.replace('_', '-')}", f.name, type=typ, default=f.default,
                               help=docs[f.name] + default)(command)  # fmt: skip
    return command


@click.group("keys")
def group():
    """Client API keys. Once a key has been created, the gateway for FLEET requires an active key on every request.

    Revoking every key does not open the gateway again: it stays closed (401) until you run
    `smallfleet keys open FLEET`.
    """


@group.command("create")
@fleet_argument
@click.argument("name")
@db_option
@click.option("--role", type=click.Choice(["client", "reviewer", "admin"]), default="client", show_default=True,
              help="client: calls the API and gives feedback on its own requests; reviewer: also answers reviews; "
              "admin: everything, feedback on any request included.")
@limit_flags
def create_command(fleet, name, db_url, role, **limits):
    """Create a key called NAME and print it once (only its hash is stored).

    \b
    Limits are enforced in the gateway database, so every gateway sharing it enforces one
    limit; a request over one gets HTTP 429 naming the limit, with Retry-After. Example:
      smallfleet keys create runs/fleet team-a --budget-usd 50 --period month --rpm 600 --tpm 200000
    """
    from smallfleet.store.keys import create_key

    key = create_key(open_database(fleet, db_url), name, role, KeyLimits(**limits))
    click.echo(key)
    click.echo(f"key {name!r} created; it is shown only now. Clients send it as 'Authorization: Bearer <key>'.", err=True)


@group.command("list")
@fleet_argument
@db_option
def list_command(fleet, db_url):
    """List keys (name, role, first characters, limits and what is used of them now, created, revoked); never the
    keys themselves."""
    from smallfleet.store.keys import list_keys
    from smallfleet.store.limits import usage

    db = open_database(fleet, db_url)
    table = Table()
    for col in ("name", "role", "starts with", "limits", "used now", "created", "revoked"):
        table.add_column(col)
    for k in list_keys(db):
        used = usage(db, k["id"], k["limits"])
        shown = ", ".join(f"${v:.4g}" if m == "usd" else f"{v:g} {m}" for m, v in used.items())
        table.add_row(k["name"], k["role"], k["prefix"] + "...", k["limits"].describe(), shown,
                      str(k["created_at"])[:19], str(k["revoked_at"] or "")[:19])  # fmt: skip
    Console().print(table)


@group.command("revoke")
@fleet_argument
@click.argument("name")
@db_option
def revoke_command(fleet, name, db_url):
    """Revoke the key called NAME (the gateway stops accepting it within seconds).

    Revoking the last key does not open the gateway: see `smallfleet keys open`.
    """
    from smallfleet.store.keys import revoke_key

    revoke_key(open_database(fleet, db_url), name)
    click.echo(f"key {name!r} revoked")


@group.command("open")
@fleet_argument
@db_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def open_command(fleet, db_url, yes):
    """Open the gateway again: answer requests without any key.

    \b
    Only when every key is revoked (a gateway whose keys are all revoked stays closed
    until this command). It forgets the revoked keys, so `keys list` shows none; creating
    a key later closes the gateway again. Running gateways follow within seconds.
    """
    from smallfleet.store.keys import list_keys, open_gateway

    db = open_database(fleet, db_url)
    active = [k["name"] for k in list_keys(db) if k["revoked_at"] is None]
    if not active and not yes:
        click.confirm("Anyone who can reach the gateway will be able to use it without a key. Open it?", abort=True)
    names = open_gateway(db)
    click.echo(f"gateway open: no key is required (forgot {len(names)} revoked key{'s' if len(names) != 1 else ''})")
