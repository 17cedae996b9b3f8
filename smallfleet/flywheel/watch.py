"""`smallfleet watch`: the flywheel turning by itself. Every `check_every` seconds, for each
task of the fleet, count the labelled traffic no version has seen and (with `on_drift`) run
a drift check; when the fleet's `retrain_when` conditions hold, retrain the task through
`retrain.retrain`, which gates the candidate and promotes it only when it passes.

A failed retrain is reported and the loop goes on; retraining itself guarantees that a
crash leaves the served version untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from smallfleet.config import RetrainWhen
from smallfleet.errors import SmallfleetError
from smallfleet.fleet import fleet_index
from smallfleet.flywheel.gate import GateSettings
from smallfleet.flywheel.monitor import DriftSettings, check_drift, fleet_targets
from smallfleet.flywheel.retrain import retrain, unseen_rows
from smallfleet.flywheel.traffic import labelled_traffic
from smallfleet.store import Database
from smallfleet.tasks import SavedTask


@dataclass
class Decision:
    """What one check decided for one task."""

    task: str
    new_rows: int
    drift: bool | None
    """The drift verdict; None when no drift check ran."""
    retrain: bool
    why: str
    result: dict | None = None
    """What `retrain` returned, when it ran."""


def fleet_conditions(fleet: Path, **overrides) -> RetrainWhen:
    """The fleet's `retrain_when` (recorded in fleet.json at training), with the given settings replacing it."""
    recorded = fleet_index(fleet).get("retrain_when") or {}
    values = {**recorded, **{k: v for k, v in overrides.items() if v is not None}}
    return RetrainWhen(**values)


def check_once(fleet: Path, db: Database, when: RetrainWhen, console: Console, drift: DriftSettings | None = None,
               gate: GateSettings | None = None, embedder=None) -> list[Decision]:  # fmt: skip
    """Check every task of `fleet` once and retrain those whose conditions hold; returns the decisions."""
    fleet = Path(fleet)
    index = fleet_index(fleet)
    report = None
    if when.on_drift:
        from smallfleet.models.embed import SentenceEmbedder

        tasks, router = fleet_targets(fleet)
        report = check_drift(tasks, router, db, drift or DriftSettings(), embedder or SentenceEmbedder())
    decisions = []
    for name, entry in index["tasks"].items():
        rows = labelled_traffic(db, SavedTask.open(fleet / entry["folder"])).rows
        new = len(unseen_rows(fleet, name, rows))
        drifted = None if report is None else report["tasks"][name]["drift"]
        decision = _decide(name, new, drifted, when)
        if decision.retrain:
            console.print(f"[bold]{name}[/]: retraining ({decision.why})")
            try:
                decision.result = retrain(fleet, name, db, console, True, gate)
            except SmallfleetError as exc:  # e.g. a data file gone: the next check tries again
                console.print(f"[red]{name}: retraining failed[/]: {exc}")
                decision.result = {"error": str(exc)}
        else:
            console.print(f"{name}: no retraining ({decision.why})")
        decisions.append(decision)
    return decisions


def _decide(name: str, new: int, drifted: bool | None, when: RetrainWhen) -> Decision:
    if when.min_new_rows is not None and new >= when.min_new_rows:
        return Decision(name, new, drifted, True, f"{new} new labelled rows >= min_new_rows {when.min_new_rows}")
    if when.on_drift and drifted and new:
        return Decision(name, new, drifted, True, f"drift found, {new} new labelled rows")
    parts = [f"{new} new labelled rows" + (f" < min_new_rows {when.min_new_rows}" if when.min_new_rows else "")]
    if when.on_drift:
        parts.append("drift found but no new labelled rows to learn from" if drifted else "no drift")
    return Decision(name, new, drifted, False, ", ".join(parts))


def watch(fleet: Path, db: Database, when: RetrainWhen, console: Console, once: bool = False, **options) -> None:
    """Check and retrain every `when.check_every` seconds until Ctrl-C (or once); `options` go to `check_once`."""
    if not when.active:
        raise SmallfleetError(f"{fleet}: retrain_when sets no condition (min_new_rows or on_drift): nothing to watch for; "
                              "declare `retrain_when:` in the fleet YAML or pass --min-new-rows / --on-drift")  # fmt: skip
    embedder = None
    if when.on_drift:
        from smallfleet.models.embed import SentenceEmbedder

        embedder = SentenceEmbedder()  # loaded once, reused by every check
    while True:
        console.print(f"[dim]{time.strftime('%Y-%m-%d %H:%M:%S')}[/] checking {fleet}")
        check_once(fleet, db, when, console, embedder=embedder, **options)
        if once:
            return
        time.sleep(when.check_every)
