"""Arguments and options shared by the commands that read a fleet's gateway database."""

from __future__ import annotations

from pathlib import Path

import click

fleet_argument = click.argument("fleet", type=click.Path(exists=True, file_okay=False, path_type=Path))
db_option = click.option(
    "--db", "db_url", help="SQLAlchemy URL of the gateway database [default: $SMALLFLEET_DB or FLEET/smallfleet.db]."
)


def open_database(fleet: Path, db_url: str | None):
    """The gateway database of `fleet` (migrated to the current schema)."""
    from smallfleet.store import Database, database_url

    return Database(database_url(fleet, db_url))
