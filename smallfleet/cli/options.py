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
    "llama-cpp-python is installed and the base is a llama-architecture GGUF, else transformers].",
)


def use_runtime(runtime: str | None) -> None:
    """Make --runtime the choice of every generate specialist this process loads."""
    if runtime:
        os.environ[RUNTIME_ENV] = runtime


def task_manifest(fleet: Path, task: str | None) -> dict:
    """The specialist manifest of `task` in FLEET (found through its fleet.json), or {} when there is none."""
    from smallfleet.fleet import FLEET_INDEX
    from smallfleet.training.artifacts import MANIFEST, read_json

    if not task:
        return {}
    folder = fleet / task
    if (fleet / FLEET_INDEX).is_file():
        entry = read_json(fleet / FLEET_INDEX).get("tasks", {}).get(task)
        folder = fleet / entry["folder"] if entry else folder
    elif (fleet / MANIFEST).is_file():  # FLEET is one specialist folder
        folder = fleet
    return read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else {}


def example_fields(fleet: Path, task: str) -> tuple[str, str]:
    """(input, answer) field names of `task`'s training rows: the label field, or a generate task's output field."""
    manifest = task_manifest(fleet, task)
    fields = manifest.get("fields", {})
    answer = fields.get("output") if manifest.get("kind") == "generate" else fields.get("label")
    return fields.get("text") or "text", answer or "label"


def open_database(fleet: Path, db_url: str | None):
    """The gateway database of `fleet` (migrated to the current schema)."""
    from smallfleet.store import Database, database_url

    return Database(database_url(fleet, db_url))
