"""Train every task of a fleet into one folder: `<out>/<task>/` per specialist, the
router in `<out>/_router/` (two or more tasks), and a `fleet.json` index that later
tools (eval, serve, costs) read. The index also carries the escalation tiers, the
serving settings, and each task's cascade threshold."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console

from smallfleet.config import FleetSpec
from smallfleet.errors import ConfigError, SpecialistError
from smallfleet.guarantee import Guarantee, guaranteed_threshold
from smallfleet.tasks import TaskSpec
from smallfleet.tasks.specialist import confidence_curve
from smallfleet.training.artifacts import MANIFEST, check_output, read_json, write_json

FLEET_INDEX = "fleet.json"
FROZEN_DIR = "_frozen"
FROZEN_SHARE, FROZEN_SEED, FROZEN_MIN_ROWS = 0.2, 20261201, 50
"""A task without a test file gets a seeded FROZEN_SHARE of its training rows set aside (when it has at least
FROZEN_MIN_ROWS) as its frozen evaluation set."""


def fleet_index(folder: Path, empty_ok: bool = False) -> dict:
    """The index of a fleet folder (its fleet.json), or a one-task index for a single specialist folder.

    Args:
        empty_ok: a folder holding neither is a fleet of no tasks (a pure pass-through gateway's folder).

    Raises:
        SpecialistError: the folder holds neither (and not `empty_ok`).
    """
    folder = Path(folder)
    if empty_ok and folder.is_dir() and not (folder / FLEET_INDEX).exists() and not (folder / MANIFEST).exists():
        return {"name": folder.name, "tasks": {}}
    if (folder / FLEET_INDEX).is_file():
        return read_json(folder / FLEET_INDEX)
    if (folder / MANIFEST).is_file():
        manifest = read_json(folder / MANIFEST)
        entry = {"kind": manifest.get("kind"), "folder": ".", "cascade": manifest.get("cascade")}
        return {"name": folder.name, "tasks": {manifest["name"]: entry}}
    raise SpecialistError(f"{folder} holds neither a fleet ({FLEET_INDEX}) nor a specialist ({MANIFEST})")


def train_task(spec: TaskSpec, out: Path, force: bool, console: Console) -> dict:
    """Train one task's specialist through its kind; returns its metrics."""
    return spec.task_kind.train(spec, out, force=force, console=console)


def headline(metrics: dict) -> dict:
    """The scalar numbers of one split's metrics (what fleet.json keeps)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def cascade_threshold(folder: Path, target: float, delta: float) -> dict:
    """The task's escalation threshold with its guarantee (see `guarantee.py`), from the saved calibration curve."""
    return guaranteed_threshold(confidence_curve(folder), target, delta).to_dict()


def route_threshold(folder: Path, target: float) -> dict:
    """The router's threshold: the lowest confidence whose accepted validation routes still meet `target`."""
    threshold, coverage = confidence_curve(folder).threshold_for(target)
    return {"target": target, "threshold": round(threshold, 6), "validation_coverage": round(coverage, 4)}


def set_aside_frozen(task: TaskSpec, out: Path) -> TaskSpec:
    """For a task with no test file, a seeded slice of its training rows set aside, never trained on, as the frozen
    evaluation set every later version is gated on: the task with `train` the rest and `test` the slice (both written
    under `<out>/_frozen/<task>/`). A task with a test file, or too few rows, comes back as it is."""
    from smallfleet.data import holdout_split, read_rows

    if task.test is not None:
        return task
    rows = [row for _, row in read_rows(task.train)]
    if len(rows) < FROZEN_MIN_ROWS:
        return task
    kept, frozen, how = holdout_split(rows, FROZEN_SHARE, FROZEN_SEED)
    folder = out / FROZEN_DIR / task.name
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, part in (("train.jsonl", kept), ("frozen.jsonl", frozen)):
        tmp = folder / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        files[name] = tmp.replace(folder / name)
    note = f"{len(frozen)} rows set aside from {task.train} at first training ({how}), never trained on"
    return replace(task, train=files["train.jsonl"], test=files["frozen.jsonl"], test_note=note)


def train_fleet(fleet: FleetSpec, out: Path, force: bool = False, console: Console | None = None, **overrides) -> dict:
    """Train all tasks of `fleet` (and its router) into `out`, printing each task's test evaluation.

    Args:
        fleet: the parsed fleet spec.
        out: fleet folder; each specialist goes to `out/<task name>`, the router to `out/_router`.
        force: replace specialists already there.
        console: where progress and reports go.
        overrides: settings that replace the spec's for every task that has them (None = keep).

    Raises:
        ConfigError: an override names a setting no task of the fleet has.
    """
    from smallfleet.router import ROUTER_DIR, train_router

    console = console or Console(stderr=True)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unused = sorted(set(overrides) - {f for t in fleet.tasks for f in asdict(t.settings)})
    if unused:
        raise ConfigError(f"--{unused[0].replace('_', '-')} is not a setting of any task in {fleet.source or fleet.name}")
    needs_router = len(fleet.tasks) > 1
    for folder in [t.name for t in fleet.tasks] + ([ROUTER_DIR] if needs_router else []):
        check_output(out / folder, force)  # fail before any training if any output would be clobbered
    out.mkdir(parents=True, exist_ok=True)
    index = {"name": fleet.name, "source": str(fleet.source), "tasks": {}}
    if (out / FLEET_INDEX).exists():
        index["tasks"] = read_json(out / FLEET_INDEX).get("tasks", {})
    index.update(tiers=[asdict(t) for t in fleet.tiers], serving=asdict(fleet.serving), router=None,
                 retrain_when=asdict(fleet.retrain_when))
    for task in fleet.tasks:
        task = replace(task, settings=task.settings.replace(**{k: v for k, v in overrides.items() if hasattr(task.settings, k)}))
        task = set_aside_frozen(task, out)
        started = time.monotonic()
        metrics = train_task(task, out / task.name, force, console)
        index["tasks"][task.name] = {
            "kind": task.kind,
            "folder": task.name,
            "train_seconds": round(time.monotonic() - started, 1),
            "metrics": {split: headline(m) for split, m in metrics.items()},
            "cascade": cascade_threshold(out / task.name, task.target, task.delta),
            "novelty": read_json(out / task.name / MANIFEST).get("novelty"),
            # what `retrain` starts from: the data files, by absolute path (settings are in the manifest)
            "data": {split: str(Path(p).resolve()) if p else None
                     for split, p in (("train", task.train), ("valid", task.valid), ("test", task.test))},
            "frozen": task.test_note or None,
        }
        write_json(out / FLEET_INDEX, index)
        if "test" in metrics:
            task.task_kind.print_report(metrics["test"], console, title=f"{task.name}: test ({task.test})")
    if needs_router:
        started = time.monotonic()
        metrics = train_router(fleet, out / ROUTER_DIR, force, console)
        index["router"] = {
            "folder": ROUTER_DIR,
            "train_seconds": round(time.monotonic() - started, 1),
            "metrics": {split: headline(m) for split, m in metrics.items()},
            "cascade": route_threshold(out / ROUTER_DIR, fleet.router.target),
            "novelty": read_json(out / ROUTER_DIR / MANIFEST).get("novelty"),
            "out_of_scope": str(fleet.router.out_of_scope) if fleet.router.out_of_scope else None,
            # with the router's manifest (base, training settings), what `retrain` refits it from
            "text_field": fleet.router.text_field, "max_per_task": fleet.router.max_per_task,
        }
        v = metrics["validation"]
        console.print(f"router: validation accuracy {v['accuracy']:.3f} over {len(fleet.tasks)} tasks"
                      f"{' + none' if fleet.router.out_of_scope else ''}")  # fmt: skip
    write_json(out / FLEET_INDEX, index)
    for task in fleet.tasks:
        console.print(f"{task.name}: {Guarantee(**index['tasks'][task.name]['cascade']).describe()}")
    return index
