"""Train every task of a fleet into one folder: `<out>/<task>/` per specialist and a
`fleet.json` index that later tools (eval, serve) read."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from smallfleet.config import FleetSpec, TaskSpec
from smallfleet.tasks.base import kind_module
from smallfleet.training.artifacts import check_output, read_json, write_json

FLEET_INDEX = "fleet.json"


def train_task(spec: TaskSpec, out: Path, force: bool, console: Console) -> dict:
    """Train one task's specialist according to its kind; returns its metrics."""
    return kind_module(spec.kind).train(spec, out, force=force, console=console)


def headline(metrics: dict) -> dict:
    """The scalar numbers of one split's metrics (what fleet.json keeps)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def train_fleet(fleet: FleetSpec, out: Path, force: bool = False, console: Console | None = None, **overrides) -> dict:
    """Train all tasks of `fleet` into `out`, printing each task's test evaluation.

    Args:
        fleet: the parsed fleet spec.
        out: fleet folder; each specialist goes to `out/<task name>`.
        force: replace specialists already there.
        console: where progress and reports go.
        overrides: training settings that replace the spec's for every task (None = keep).
    """
    console = console or Console(stderr=True)
    for task in fleet.tasks:  # fail before any training if any output would be clobbered
        check_output(out / task.name, force)
    out.mkdir(parents=True, exist_ok=True)
    index = {"name": fleet.name, "source": str(fleet.source), "tasks": {}}
    if (out / FLEET_INDEX).exists():
        index["tasks"] = read_json(out / FLEET_INDEX).get("tasks", {})
    for task in fleet.tasks:
        task = replace(task, training=task.training.replace(**overrides))
        started = time.monotonic()
        metrics = train_task(task, out / task.name, force, console)
        index["tasks"][task.name] = {
            "kind": task.kind,
            "folder": task.name,
            "train_seconds": round(time.monotonic() - started, 1),
            "metrics": {split: headline(m) for split, m in metrics.items()},
        }
        write_json(out / FLEET_INDEX, index)
        if "test" in metrics:
            kind_module(task.kind).print_report(metrics["test"], console, title=f"{task.name}: test ({task.test})")
    return index
