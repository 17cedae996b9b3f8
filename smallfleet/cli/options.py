"""Arguments and options shared by several commands."""

from __future__ import annotations

import os
from pathlib import Path

import click

from smallfleet.config import RUNTIME_ENV, RUNTIMES

fleet_argument = click.argument("fleet", type=click.Path(exists=True, file_okay=False, path_type=Path))
db_option = click.option(
    "--db", "db_url", help="SQLAlchemy URL of the gateway database [default: $SMALLFLEET_DB or FLEET/smallfleet.db]."
)

runtime_option = click.option(
    "--runtime", type=click.Choice(RUNTIMES), envvar=RUNTIME_ENV,
    help="Generate specialists: decoding runtime [default: $SMALLFLEET_RUNTIME or auto = llama.cpp when "
    "llama-cpp-python is installed, else transformers].",
)


def use_runtime(runtime: str | None) -> None:
    """Make --runtime the choice of every generate specialist this process loads."""
    if runtime:
        os.environ[RUNTIME_ENV] = runtime


def open_database(fleet: Path, db_url: str | None):
    """The gateway database of `fleet` (migrated to the current schema)."""
    from smallfleet.store import Database, database_url

    return Database(database_url(fleet, db_url))
