"""Arguments and options shared by several commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from smallfleet.models.encoder_runtime import ENCODER_RUNTIME_ENV, encoder_runtime_names
from smallfleet.models.runtime import AUTO, RUNTIME_ENV, runtime_names

fleet_argument = click.argument("fleet", type=click.Path(exists=True, file_okay=False, path_type=Path))
db_option = click.option(
    "--db", "db_url", help="SQLAlchemy URL of the gateway database [default: $SMALLFLEET_DB or FLEET/smallfleet.db]."
)

runtime_option = click.option(
    "--runtime", "runtime", multiple=True, type=click.Choice((*runtime_names(), *encoder_runtime_names())),
    help="Where the models run; repeat to name both. Encoder specialists (classify, extract, router): onnx (int8 on "
    "ONNX Runtime, the `onnx` extra) or torch (fp32) [default: $SMALLFLEET_ENCODER_RUNTIME or auto = onnx for a "
    "specialist trained with its int8 export, on a CPU, when onnxruntime is installed]. Generate specialists: "
    "llama.cpp (each adapter merged into its own copy of the base), llama.cpp-lora (one base, adapters applied per "
    "request) or transformers [default: $SMALLFLEET_RUNTIME or auto = llama.cpp when llama-cpp-python is installed "
    "and the base is a llama-architecture GGUF, else transformers].",
)


def use_runtime(runtime: tuple[str, ...] | str | None) -> None:
    """Make each --runtime the choice of every specialist of its family this process loads (auto: both families)."""
    for name in (runtime,) if isinstance(runtime, str) else runtime or ():
        if name == AUTO:
            os.environ[RUNTIME_ENV] = os.environ[ENCODER_RUNTIME_ENV] = AUTO
        elif name in encoder_runtime_names():
            os.environ[ENCODER_RUNTIME_ENV] = name
        else:
            os.environ[RUNTIME_ENV] = name


def saved_task(fleet: Path, task: str | None):
    """The trained task `task` of FLEET (found through its fleet.json, or FLEET itself when it is one specialist).

    Raises:
        SpecialistError: no such task, or its folder holds no specialist.
    """
    from smallfleet.errors import SpecialistError
    from smallfleet.fleet import FLEET_INDEX
    from smallfleet.tasks import SavedTask
    from smallfleet.training.artifacts import MANIFEST, read_json

    if not task:
        raise SpecialistError("this item has no task (it went upstream without one), so it has no training row")
    folder = fleet / task
    if (fleet / FLEET_INDEX).is_file():
        entry = read_json(fleet / FLEET_INDEX).get("tasks", {}).get(task)
        folder = fleet / entry["folder"] if entry else folder
    elif (fleet / MANIFEST).is_file():  # FLEET is one specialist folder
        folder = fleet
    return SavedTask.open(folder)


def open_database(fleet: Path, db_url: str | None):
    """The gateway database of `fleet` (migrated to the current schema)."""
    from smallfleet.store import Database, database_url

    return Database(database_url(fleet, db_url))


def write_training_rows(task, pairs: list[tuple[str, str]], out: Path) -> None:
    """Write (input, answer) pairs as the task's training rows (JSONL), replacing `out` only when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for text, answer in pairs:
            f.write(json.dumps(task.training_row(text, answer), ensure_ascii=False) + "\n")
    tmp.replace(out)
